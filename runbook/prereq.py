"""Step 1: is this tenant ready for the move? (seppmail365cloud.md §6, §10 step 2)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from runbook import seppmail
from runbook.powershell import versions as versions_mod

ERROR, WARNING, OK = "error", "warning", "ok"


@dataclass
class Check:
    item: str
    level: str
    message: str


def host_checks(session_versions: dict) -> list[Check]:
    """pwsh and ExchangeOnlineManagement; the module is only reported (step 2 installs it)."""
    host = {k: v for k, v in session_versions.items() if k != seppmail.MODULE_NAME}
    checks = [Check(f.item, f.level, f.message) for f in versions_mod.check_host(host)]
    installed = session_versions.get(seppmail.MODULE_NAME) or []
    if isinstance(installed, str):
        installed = [installed]
    checks.append(Check(seppmail.MODULE_NAME, OK,
                        f"installed: {', '.join(installed) or 'none'}; step 2 installs "
                        f"{seppmail.CBC_MINIMUM_VERSION} or later where needed"))
    return checks


def tenant_checks(p, connection: dict, accepted: list[dict], org: dict) -> list[Check]:
    """The right tenant is connected and knows every domain we were given."""
    checks = []
    state = str(connection.get("State", ""))
    checks.append(Check("connection", OK if state == "Connected" else ERROR,
                        f"Exchange Online connection state: {state or 'unknown'}"))
    tenant_id = str(connection.get("TenantID") or connection.get("TenantId") or "")
    if p.tenant_id:
        same = tenant_id.lower() == p.tenant_id.lower()
        checks.append(Check("tenant id", OK if same else ERROR,
                            f"connected tenant {tenant_id}" + ("" if same else
                            f", expected {p.tenant_id}: connect to the right tenant")))
    names, odd = _accepted_names(accepted)
    checks += odd
    initial = [n for n, d in names.items() if d.get("InitialDomain")]
    right = p.organization in names and (not initial or initial[0] == p.organization)
    checks.append(Check("tenant", OK if right else ERROR,
                        f"initial domain {initial[0] if initial else 'unknown'}" +
                        ("" if right else f", expected {p.organization}: connected to "
                         "another tenant, or the tenant parameter is wrong")))
    for given, domain in zip(p.domains, p.ascii_domains):
        known = domain in names
        checks.append(Check(f"domain {given}", OK if known else ERROR,
                            "an accepted domain of the tenant" if known else
                            "not an accepted domain of this tenant: check the spelling "
                            "or add it in the Microsoft 365 admin center first"))
    default = [n for n, d in names.items() if d.get("Default")]
    if default and default[0] != p.primary_domain:
        checks.append(Check("primary domain", WARNING,
                            f"the connectors are built from {p.primary_domain}, but the "
                            f"tenant's default domain is {default[0]}"))
    if p.routing == "inline":
        others = sorted(n for n in names if not n.endswith(".onmicrosoft.com")
                        and n not in p.ascii_domains)
        if others:
            checks.append(Check("inline covers all domains", ERROR,
                                "inline routing needs every domain of the tenant on "
                                f"SEPPmail.cloud; not given: {', '.join(others)}. Add "
                                "them (and provision them at SEPPmail.cloud) or use "
                                "parallel routing"))
    if org.get("IsDehydrated"):
        checks.append(Check("organization", WARNING,
                            "the organization is dehydrated: the module will run "
                            "Enable-OrganizationCustomization"))
    return checks


def _accepted_names(accepted: list[dict]) -> tuple[dict, list[Check]]:
    """Accepted domains by their DNS form, and a warning for each name that is none.

    Tenant data is untrusted (issue 10): a name that is no domain name is
    shown, as text the tables escape, and left out; it cannot be one of the
    declared domains, which are checked on their own.
    """
    names, odd = {}, []
    for item in accepted:
        name = str(item.get("DomainName"))
        try:
            names[seppmail.ascii_domain(name)] = item
        except seppmail.DomainNameError as exc:
            odd.append(Check(f"accepted domain {name!r}", WARNING,
                             f"the tenant lists it, but it is not a domain name "
                             f"({exc.reason}); left out of these checks"))
    return names, odd


def dns_checks(domain_results) -> list[Check]:
    return [Check(f"DNS {r.domain}", OK if r.status == "ok" else ERROR,
                  f"{r.status}: {r.message}") for r in domain_results]


def record_checks(record, step: str, checks: list[Check]) -> None:
    """One ``check`` event per check, in the order made, for the report's Checks.

    `ok` is false for an error only: a warning does not stop the step, and its
    ``level`` tells the report to show it as one.
    """
    for c in checks:
        record.event("check", step=step, name=c.item, ok=c.level != ERROR,
                     level=c.level, detail=c.message)


def frame(checks: list[Check]) -> pd.DataFrame:
    order = {ERROR: 0, WARNING: 1, OK: 2}
    rows = sorted(checks, key=lambda c: order.get(c.level, 3))
    return pd.DataFrame([{"check": c.item, "result": c.level, "details": c.message}
                         for c in rows], columns=["check", "result", "details"])


def verdict(checks: list[Check]) -> tuple[str, str]:
    errors = [c for c in checks if c.level == ERROR]
    if errors:
        return "failed", "Not ready: " + "; ".join(f"{c.item}: {c.message}"
                                                   for c in errors)
    warnings = [c for c in checks if c.level == WARNING]
    note = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" \
        if warnings else ""
    return "succeeded", f"All {len(checks)} prerequisite checks passed{note}."
