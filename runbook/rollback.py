"""Undo a run: remove what it created, recreate from its backup what it removed.

Recreation follows exchange-objects.md §10: only the parameters New-* takes,
never the fields Exchange assigns, `SenderDomains` back in plain form, rule
`State` as `-Enabled`, connectors before rules (a rule needs its connector)
and rules in ascending old priority so each lands where it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from runbook import cleanup, inventory
from runbook.inventory import Inventory, Item
from runbook.powershell import PowerShellError
from runbook.powershell.records import address_space_domain

INBOUND_PARAMETERS = (
    "Name", "SenderDomains", "AssociatedAcceptedDomains", "ClientHostNames",
    "CloudServicesMailEnabled", "Comment", "ConnectorSource", "ConnectorType",
    "EFSkipIPs", "EFSkipLastIP", "EFUsers", "Enabled", "RequireTls",
    "RestrictDomainsToCertificate", "RestrictDomainsToIPAddresses", "SenderIPAddresses",
    "TlsSenderCertificateName", "TreatMessagesAsInternal", "TrustedOrganizations",
)
OUTBOUND_PARAMETERS = (
    "Name", "AllAcceptedDomains", "CloudServicesMailEnabled", "Comment",
    "ConnectorSource", "ConnectorType", "Enabled", "IsTransportRuleScoped",
    "RecipientDomains", "RouteAllMessagesViaOnPremises", "SenderRewritingEnabled",
    "SmartHosts", "TestMode", "TlsDomain", "TlsSettings", "UseMXRecord",
)
# Rule properties that New-TransportRule does not take (§10 "Never pass back").
RULE_NOT_PARAMETERS = frozenset({
    "State", "Description", "Conditions", "Exceptions", "Actions", "CreatedBy",
    "LastModifiedBy", "ManuallyModified", "RuleVersion", "Size", "RegexSize",
    "DlpPolicyId", "DlpPolicy", "IsRuleConfigurationSupported",
    "RuleConfigurationUnsupportedReason", "MessageContainsAllDataClassifications",
    "MessageContainsDataClassifications", "HasSenderOverride", "NotifySender",
    "ExceptIfMessageContainsDataClassifications", "ExceptIfHasSenderOverride",
    "SenderNotificationType", "RuleSubType", "RecipientAddressType",
})
_SOURCES = {"Default", "HybridWizard", "Migrated"}
ORDER = ("inbound_connector", "outbound_connector", "transport_rule")


def creation_parameters(kind: str, obj: dict) -> dict:
    """The New-* parameters that recreate `obj` as it was."""
    if kind == "transport_rule":
        return _rule_parameters(obj)
    allowed = INBOUND_PARAMETERS if kind == "inbound_connector" else OUTBOUND_PARAMETERS
    out = {k: obj[k] for k in allowed if k in obj and not _empty(obj[k])}
    if kind == "inbound_connector" and "SenderDomains" in out:
        out["SenderDomains"] = [address_space_domain(d) for d in out["SenderDomains"]]
    if out.get("ConnectorSource") not in _SOURCES:
        out.pop("ConnectorSource", None)   # AdminUI is not an input value (§10)
    return out


def _rule_parameters(obj: dict) -> dict:
    out = {}
    for key, value in obj.items():
        if key in inventory.ASSIGNED_FIELDS or key in RULE_NOT_PARAMETERS:
            continue
        if _empty(value) or value is False:
            continue
        out[key] = value
    out["Enabled"] = str(obj.get("State", "Enabled")).lower() == "enabled"
    return out


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


@dataclass
class Backup:
    objects: list[tuple[str, dict]]   # (kind, object) as removed

    @classmethod
    def load(cls, run_dir: Path) -> "Backup":
        index_file = run_dir / "backup" / "index.json"
        if not index_file.exists():
            return cls([])
        entries = json.loads(index_file.read_text(encoding="utf-8"))
        objects = []
        for entry in entries:
            data = json.loads((run_dir / entry["file"]).read_text(encoding="utf-8"))
            objects.append((data["kind"], data["object"]))
        return cls(objects)


@dataclass
class RollbackPlan:
    before: Inventory
    remove: list[Item] = field(default_factory=list)
    recreate: list[tuple[str, dict]] = field(default_factory=list)
    present: list[tuple[str, dict]] = field(default_factory=list)
    source: str = ""
    renamed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        if not self.source:
            return "No run to undo was named: set source_run to a run folder."
        if not self.remove and not self.recreate:
            return "Nothing to undo: the tenant holds the objects it held before the run."
        return (f"Would remove {len(self.remove)} objects the run created and recreate "
                f"{len(self.recreate)} from the backup"
                + (f" ({len(self.present)} are there already)" if self.present else "")
                + "." + self.renamed_note())

    def renamed_note(self) -> str:
        if not self.renamed:
            return ""
        pairs = ", ".join(f"{old!r} as {new!r}" for old, new in self.renamed)
        return (" Exchange no longer accepts '/' or '\\' in connector names, so these"
                f" come back under the names the portal gave them: {pairs}.")

    def table(self) -> pd.DataFrame:
        rows = [{"action": "remove", "kind": inventory.KIND_LABELS[i.kind],
                 "name": i.name, "priority": i.obj.get("Priority")} for i in self.remove]
        rows += [{"action": "recreate", "kind": inventory.KIND_LABELS[k],
                  "name": o.get("Name"), "priority": o.get("Priority")}
                 for k, o in self.recreate]
        return pd.DataFrame(rows, columns=["action", "kind", "name", "priority"])


def plan(run_dir: Path, now: Inventory) -> RollbackPlan:
    """What to remove and what to recreate so the tenant is as before the run.

    Objects are matched by name *and* properties: a CBC connector that took
    the old connector's name is a new object, to remove, and the old one is
    recreated from the backup.
    """
    before = Inventory.from_json(json.loads(
        (run_dir / "inventory" / "before.json").read_text(encoding="utf-8")))
    backed_up = Backup.load(run_dir).objects
    renames = _slash_renames(backed_up)
    # The tenant as a rollback can restore it: slash-named connectors (and the
    # rules routing through them) under their portal names.
    before = Inventory(before.taken_at, *[
        [_renamed(o, renames) for o in before.objects(kind)]
        for kind in ("inbound_connector", "outbound_connector", "transport_rule")])
    original = {_fingerprint(kind, o) for kind in ORDER for o in before.objects(kind)}
    present = {_fingerprint(kind, o) for kind in ORDER for o in now.objects(kind)}
    created = Inventory(now.taken_at, *[
        [o for o in now.objects(kind) if _fingerprint(kind, o) not in original]
        for kind in ("inbound_connector", "outbound_connector", "transport_rule")])
    result = RollbackPlan(before=before, source=str(run_dir),
                          renamed=sorted(renames.values()))
    result.remove = cleanup.plan(created).removals
    for kind, obj in sorted(backed_up, key=_recreate_order):
        obj = _renamed(obj, renames)
        target = result.present if _fingerprint(kind, obj) in present else result.recreate
        target.append((kind, obj))
    return result


def _slash_renames(objects: list[tuple[str, dict]]) -> dict[str, tuple[str, str]]:
    """Backed-up connectors whose names New-*Connector would refuse (§9 "Names",
    seppmail365cloud.md §5.1), by lower-case name: (old name, portal name)."""
    renames = {}
    for kind, obj in objects:
        name = str(obj.get("Name") or "")
        if kind != "transport_rule" and cleanup.portal_name(name) != name:
            renames[name.lower()] = (name, cleanup.portal_name(name))
    return renames


def _renamed(obj: dict, renames: dict[str, tuple[str, str]]) -> dict:
    """`obj` with slash names replaced, in its Name or in the connector it routes to."""
    out = dict(obj)
    for key in ("Name", "RouteMessageOutboundConnector"):
        value = out.get(key)
        if isinstance(value, str) and value.lower() in renames:
            out[key] = renames[value.lower()][1]
    return out


def _fingerprint(kind: str, obj: dict) -> str:
    """Name and properties, without what Exchange assigns or shifts (Priority)."""
    props = {k: v for k, v in inventory.comparable(obj).items() if k != "Priority"}
    props["Name"] = str(props.get("Name", "")).lower()
    return kind + json.dumps(props, sort_keys=True, default=str)


def _recreate_order(entry):
    kind, obj = entry
    priority = obj.get("Priority") if isinstance(obj.get("Priority"), int) else 0
    return (ORDER.index(kind), priority)


def run(p: RollbackPlan, *, record, exo, confirmed: bool) -> tuple[str, str]:
    if not p.remove and not p.recreate:
        return "succeeded", p.summary()
    refused = names_exchange_refuses(p.recreate)
    if refused:  # found before anything is removed: the tenant keeps its setup
        return "failed", (
            "Rollback not started: Exchange would refuse to recreate "
            f"{', '.join(map(repr, refused))} (a connector or rule name holds 1 to "
            f"{MAX_NAME_LENGTH} characters, no space at either end). Nothing was "
            "changed; recreate these by hand from backup/ under a name Exchange "
            "accepts, then roll back again.")
    if not confirmed:
        return "planned", p.summary() + " Nothing was changed (confirm=False)."
    removal = cleanup.Plan(inventory=p.before, removals=p.remove)
    cleanup.backup(removal, record, exo)
    try:
        cleanup.execute(removal, exo)
    except cleanup.CleanupFailed as exc:
        return "failed", f"Rollback stopped: {exc}"
    recreated = []
    for n, (kind, obj) in enumerate(p.recreate):
        try:
            exo.create(kind, creation_parameters(kind, obj))
        except PowerShellError as exc:
            missing = [o.get("Name") for _, o in p.recreate[n:]]
            return "failed", (
                f"Rollback stopped: recreating {inventory.KIND_LABELS[kind]} "
                f"{obj.get('Name')!r} failed: {str(exc).rstrip('. ')}. Recreated before"
                f" it: {', '.join(map(repr, recreated)) or 'nothing'}. Not recreated:"
                f" {', '.join(map(repr, missing))} (all in backup/).")
        recreated.append(obj.get("Name"))
    return "succeeded", (f"Removed {len(p.remove)} created objects and recreated "
                         f"{len(p.recreate)} from the backup." + p.renamed_note())


# exchange-objects.md §9 "Names": at most 64 characters for connectors and rules,
# no leading or trailing whitespace.
MAX_NAME_LENGTH = 64


def names_exchange_refuses(objects: list[tuple[str, dict]]) -> list[str]:
    """Names of objects to recreate that New-*Connector / New-TransportRule refuse."""
    refused = []
    for _, obj in objects:
        name = str(obj.get("Name") or "")
        if not name.strip() or name != name.strip() or len(name) > MAX_NAME_LENGTH:
            refused.append(name)
    return refused


def compare(before: Inventory, after: Inventory) -> pd.DataFrame:
    """The tenant now against the inventory taken before the run."""
    return inventory.diff(before, after)


def plan_for(source_run: str, now: Inventory) -> RollbackPlan:
    """The rollback plan of a run folder; empty when no run is named."""
    if not source_run:
        return RollbackPlan(before=now)
    run_dir = Path(source_run)
    if not (run_dir / "inventory" / "before.json").is_file():
        raise ValueError(f"{run_dir} holds no inventory/before.json: not a run folder "
                         "whose cleanup started")
    return plan(run_dir, now)


def verdict(status: str, message: str, p: RollbackPlan, after: Inventory
            ) -> tuple[str, str]:
    if not p.source:
        return "planned", "No run to undo was named (source_run is empty)."
    if status != "succeeded" or (not p.remove and not p.recreate):
        return status, message
    left = compare(p.before, after)
    if not left.empty:
        return "failed", (message + " But the tenant still differs from before the run: "
                          + "; ".join(f"{r.name} {r.change}" for r in left.itertuples()))
    return status, message + " The tenant matches the inventory taken before the run."
