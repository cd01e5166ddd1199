"""A typed facade over Exchange Online and the seppmail365cloud module.

This is the only module that names cmdlets. Reads return normalised records
(`runbook.powershell.records`). Every change to a tenant goes through
`ExchangeOnline.change()`, which refuses without confirmation, insists that a
removal's backup was written first, records the request and its result in the
audit, and only then sends the command with `confirmed: true`.
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import datetime
from typing import Any, Iterable

from runbook.powershell import CommandFailed, PowerShellError
from runbook.powershell.records import normalise_all

log = logging.getLogger(__name__)


class NotConfirmed(RuntimeError):
    """A change was asked for in a run without confirmation; nothing was sent."""

    def __init__(self, command: str, target: str):
        self.command = command
        self.target = target
        super().__init__(f"{command} {target!r} needs confirmation (confirm=True); "
                         "nothing was changed")


class BackupMissing(RuntimeError):
    """A removal was asked for before the object's backup was written."""


class ExchangeOnline:
    """One connected tenant, reached through a `runbook.powershell.Session`."""

    def __init__(self, session, *, record=None, confirmed: bool = False,
                 step: str | None = None):
        self.session = session
        self.record = record
        self.confirmed = confirmed
        self.step = step
        self._backed_up: set[str] = set()
        self._ids = itertools.count(1)

    # -- session -----------------------------------------------------------

    def connect(self, organization: str, *, app_id: str = "",
                certificate_path: str = "") -> dict:
        """Connect and return the connection information Exchange reports."""
        parameters: dict[str, Any] = {"Organization": organization, "ShowBanner": False}
        if app_id:
            parameters.update(AppId=app_id, CertificateFilePath=certificate_path)
        elif self.session.host == "pwsh":
            parameters["Device"] = True
        self._read("Connect-ExchangeOnline", parameters)
        return self.connection()

    def connection(self) -> dict:
        """The newest `Get-ConnectionInformation` entry (design: not the banner)."""
        info = self._read("Get-ConnectionInformation")
        if not info:
            raise PowerShellError("Get-ConnectionInformation returned no connection")
        return info[-1]

    @property
    def host_versions(self) -> dict:
        return dict(self.session.versions)

    # -- reads -------------------------------------------------------------

    def accepted_domains(self) -> list[dict]:
        return self._read("Get-AcceptedDomain")

    def organization_config(self) -> dict:
        found = self._read("Get-OrganizationConfig")
        return found[0] if found else {}

    def inbound_connectors(self) -> list[dict]:
        return self._read("Get-InboundConnector")

    def outbound_connectors(self) -> list[dict]:
        # Test-mode connectors are hidden without this switch (§1.3 of the reference).
        return self._read("Get-OutboundConnector", {"IncludeTestModeConnectors": True})

    def transport_rules(self) -> list[dict]:
        return sorted(self._read("Get-TransportRule"), key=lambda r: r.get("Priority", 0))

    def message_trace(self, start: datetime, end: datetime, *,
                      recipient: str = "", sender: str = "",
                      result_size: int = 1000) -> list[dict]:
        parameters: dict[str, Any] = {"StartDate": start.isoformat(),
                                      "EndDate": end.isoformat(),
                                      "ResultSize": result_size}
        if recipient:
            parameters["RecipientAddress"] = recipient
        if sender:
            parameters["SenderAddress"] = sender
        return self._read("Get-MessageTraceV2", parameters)

    def message_trace_detail(self, trace_id: str, recipient: str) -> list[dict]:
        return self._read("Get-MessageTraceDetailV2",
                          {"MessageTraceId": trace_id, "RecipientAddress": recipient})

    # -- the module --------------------------------------------------------

    def gallery_versions(self) -> list[str]:
        found = self._read("Find-Module", {"Name": "seppmail365cloud",
                                           "AllVersions": True, "AllowPrerelease": True})
        return [str(m["Version"]) for m in found]

    def installed_module_versions(self) -> list[str]:
        try:
            found = self._read("Get-InstalledModule", {
                "Name": "seppmail365cloud", "AllVersions": True, "AllowPrerelease": True})
        except CommandFailed as exc:
            # PowerShellGet reports "none installed" as an error, not an empty list.
            if "no match was found" in str(exc).lower():
                return []
            raise
        return [str(m["Version"]) for m in found]

    def import_module(self, version: str = "") -> None:
        """Import seppmail365cloud, as a change: its import-time checks change the
        tenant and the machine (domain reference §6: modules installed, the
        organisation hydrated, a test connector created and removed), so it needs
        confirmation and lands in the audit with the warnings it printed."""
        parameters: dict[str, Any] = {"Name": "seppmail365cloud", "Force": True}
        if version:
            # -RequiredVersion is a System.Version: no prerelease label. A
            # prerelease installs into the folder of its base version anyway.
            parameters["RequiredVersion"] = version.split("-", 1)[0]
        self.change("Import-Module", parameters,
                    target=f"seppmail365cloud {version or '(newest)'}")

    def deployment_info(self, domain: str) -> dict:
        found = self._read("Get-SC365DeploymentInfo", {"SEPPmailCloudDomain": domain})
        return found[0] if found else {}

    # -- changes -----------------------------------------------------------

    def install_module(self, version: str, name: str = "seppmail365cloud") -> list[dict]:
        parameters: dict[str, Any] = {"Name": name, "Scope": "CurrentUser", "Force": True}
        if version:
            parameters.update(RequiredVersion=version, AllowPrerelease="-" in version)
        return self.change("Install-Module", parameters,
                           target=f"{name} {version or '(newest)'}")

    def new_sc365_connectors(self, *, domain: str, region: str, routing: str) -> list[dict]:
        # -force: the module would otherwise stop at a Y/N prompt on hybrid tenants
        # (§1.2 step 6), which a non-interactive host cannot answer. Its other
        # effect, replacing a same-name connector, never applies: step 4's plan
        # refuses to run while such a connector exists.
        return self.change("New-SC365Connectors", {
            "SEPPmailCloudDomain": domain, "region": region, "routing": routing,
            "force": True,
        }, target=f"connectors for {domain} ({routing}, {region})")

    def new_sc365_rules(self, *, domains: Iterable[str], routing: str) -> list[dict]:
        domains = list(domains)
        return self.change("New-SC365Rules", {
            "SEPPmailCloudDomain": domains, "routing": routing,
        }, target=f"rules for {', '.join(domains)} ({routing})")

    def remove(self, kind: str, obj: dict) -> list[dict]:
        """Remove one connector or rule by its GUID, never by a name pattern."""
        command = {"inbound_connector": "Remove-InboundConnector",
                   "outbound_connector": "Remove-OutboundConnector",
                   "transport_rule": "Remove-TransportRule"}[kind]
        key = _object_key(kind, obj)
        if key not in self._backed_up:
            raise BackupMissing(f"{command} {obj.get('Name')!r}: no backup was written "
                                "first; nothing was changed")
        identity = obj.get("Guid") or obj["Name"]
        return self.change(command, {"Identity": identity}, target=obj.get("Name", ""))

    def create(self, kind: str, parameters: dict) -> list[dict]:
        """Recreate a connector or rule from backup parameters (rollback)."""
        command = {"inbound_connector": "New-InboundConnector",
                   "outbound_connector": "New-OutboundConnector",
                   "transport_rule": "New-TransportRule"}[kind]
        return self.change(command, parameters, target=parameters.get("Name", ""))

    def mark_backed_up(self, kind: str, objects: Iterable[dict]) -> None:
        """Called by the backup writer once the files are on disk."""
        self._backed_up.update(_object_key(kind, o) for o in objects)

    def change(self, command: str, parameters: dict, *, target: str) -> list[dict]:
        """The one road to a tenant change: confirmation, audit, then the call."""
        if not self.confirmed:
            raise NotConfirmed(command, target)
        change_id = f"{self.step or 'change'}-{next(self._ids)}"
        self._event("change-requested", id=change_id, command=command, target=target,
                    parameters=parameters)
        started = time.monotonic()
        try:
            reply = self.session.call(command, parameters, confirmed=True)
        except CommandFailed as exc:
            self._event("change-result", id=change_id, command=command, target=target,
                        ok=False, errors=exc.errors, warnings=list(exc.warnings),
                        duration_ms=_ms(started))
            raise
        except PowerShellError as exc:
            self._event("change-result", id=change_id, command=command, target=target,
                        ok=False, errors=[{"message": str(exc)}],
                        duration_ms=_ms(started))
            raise
        self._event("change-result", id=change_id, command=command, target=target,
                    ok=True, errors=[], warnings=list(reply.warnings),
                    duration_ms=_ms(started))
        return normalise_all(reply.output)

    # -- internals ---------------------------------------------------------

    def _read(self, command: str, parameters: dict | None = None) -> list[dict]:
        return normalise_all(self._call(command, parameters).output)

    def _call(self, command: str, parameters: dict | None = None):
        return self.session.call(command, parameters or {})

    def _event(self, kind: str, **data) -> None:
        if self.record is not None:
            data.setdefault("step", self.step)
            self.record.event(kind, **data)


def _object_key(kind: str, obj: dict) -> str:
    return f"{kind}:{obj.get('Guid') or str(obj.get('Name', '')).lower()}"


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
