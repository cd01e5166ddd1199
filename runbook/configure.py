"""Step 4: create the CBC connectors and the rules the routing mode needs.

The module creates them (New-SC365Connectors, New-SC365Rules); the runbook
decides whether that is needed, and afterwards compares what the tenant holds
with what the reference says the installed version creates (§2.2, §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from runbook import seppmail
from runbook.powershell.records import same_domain


class ConfigureBlocked(RuntimeError):
    """The tenant holds SEPPmail objects that step 4 must not overwrite."""


@dataclass
class ConfigurePlan:
    module_version: str
    tenant_id: str
    expected_connectors: dict[str, dict]
    expected_rules: list[str]
    create_connectors: bool = True
    create_rules: bool = True
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = list(self.notes)
        names = ", ".join(self.expected_connectors)
        parts.append(f"Would create {names} with module {self.module_version}"
                     if self.create_connectors else f"{names} exist with the CBC values")
        if self.expected_rules:
            parts.append(f"would create {len(self.expected_rules)} rules"
                         if self.create_rules else "the rules exist")
        else:
            parts.append(f"{self.module_version} creates no rules in this mode")
        return " ".join(parts[:len(self.notes)] + ["; ".join(parts[len(self.notes):]) + "."])


def plan(p, *, module_version: str, tenant_id: str, connectors: list[dict],
         rules: list[dict]) -> ConfigurePlan:
    """What to create, given the tenant as it is (so a second run does nothing)."""
    expected = seppmail.expected_connectors(
        tenant_id=tenant_id, domain=p.primary_domain, region=p.region, routing=p.routing,
        module_version=module_version)
    expected_rules = seppmail.expected_rules(module_version, p.routing)
    result = ConfigurePlan(module_version=module_version, tenant_id=tenant_id,
                           expected_connectors=expected, expected_rules=expected_rules)
    if expected_rules and module_version == "1.3.0-preview1" and len(p.domains) > 1:
        # p1 tests the domain list with -contains against the whole array, so
        # New-SC365Rules fails for more than one domain (modelled in the sandbox).
        raise ConfigureBlocked("seppmail365cloud 1.3.0-preview1 creates rules for one "
                               "domain only; use module 1.3.0 or later for "
                               f"{', '.join(p.domains)}")
    by_name = {str(c.get("Name", "")).lower(): c for c in connectors}
    present = [n for n in expected if n.lower() in by_name]
    if present:
        mismatches = comparison(expected, connectors)
        wrong = mismatches[~mismatches["ok"]]
        if len(present) < len(expected) or not wrong.empty:
            raise ConfigureBlocked(
                f"{', '.join(present)} exist(s) but not as module {module_version} "
                "creates them; run step 3 (cleanup) first, then this step again")
        result.create_connectors = False
        result.notes.append("The connectors exist with the expected values already.")
    existing_rules = {str(r.get("Name", "")).lower() for r in rules}
    seppmail_rules = [r for r in rules
                      if str(r.get("Name", "")).lower().startswith("[seppmail")]
    if expected_rules and all(n.lower() in existing_rules for n in expected_rules):
        result.create_rules = False
        result.notes.append("The rules exist already.")
    elif seppmail_rules:
        raise ConfigureBlocked(
            f"{len(seppmail_rules)} SEPPmail rules exist but not the set module "
            f"{module_version} creates; run step 3 (cleanup) first")
    if not expected_rules:
        result.create_rules = False
    return result


def plan_step(p, inv, *, module_version: str, tenant_id: str) -> ConfigurePlan:
    """Step 4's plan. A plan-only run whose step 3 removed nothing yet plans
    against the tenant as step 3 would leave it, and says so."""
    def make(connectors, rules):
        return plan(p, module_version=module_version, tenant_id=tenant_id,
                    connectors=connectors, rules=rules)

    try:
        return make(inv.inbound_connectors + inv.outbound_connectors, inv.transport_rules)
    except ConfigureBlocked:
        if p.confirm:
            raise
    from runbook import cleanup

    removed = {id(i.obj) for i in cleanup.plan(inv).removals}
    left = [o for o in inv.inbound_connectors + inv.outbound_connectors
            if id(o) not in removed]
    result = make(left, [r for r in inv.transport_rules if id(r) not in removed])
    result.notes.append(f"Planned as if step 3 had removed the {len(removed)} old "
                        "SEPPmail objects it plans to remove.")
    return result


def apply(exo, p, cp: ConfigurePlan) -> None:
    if cp.create_connectors:
        exo.new_sc365_connectors(domain=p.primary_domain, region=p.region,
                                 routing=p.routing)
    if cp.create_rules:
        exo.new_sc365_rules(domains=p.ascii_domains, routing=p.routing)


def comparison(expected: dict[str, dict], connectors: list[dict]) -> pd.DataFrame:
    """Expected against actual, one row per connector property."""
    by_name = {str(c.get("Name", "")).lower(): c for c in connectors}
    rows = []
    for name, values in expected.items():
        actual = by_name.get(name.lower())
        for prop, want in values.items():
            have = None if actual is None else actual.get(prop)
            rows.append({"connector": name, "property": prop, "expected": _show(want),
                         "actual": "(missing)" if actual is None else _show(have),
                         "ok": actual is not None and _equal(prop, want, have)})
    return pd.DataFrame(rows, columns=["connector", "property", "expected", "actual",
                                       "ok"])


def rule_comparison(expected: list[str], rules: list[dict]) -> pd.DataFrame:
    """Expected rule names in order against the tenant's SEPPmail rules."""
    actual = [r for r in sorted(rules, key=lambda r: r.get("Priority", 0))
              if str(r.get("Name", "")).lower().startswith("[seppmail")]
    rows = []
    for n in range(max(len(expected), len(actual))):
        want = expected[n] if n < len(expected) else "(none)"
        have = actual[n] if n < len(actual) else None
        rows.append({"position": n + 1, "expected": want,
                     "actual": have["Name"] if have else "(missing)",
                     "state": have.get("State") if have else "",
                     "priority": have.get("Priority") if have else None,
                     "ok": bool(have) and want.lower() == str(have["Name"]).lower()
                     and str(have.get("State", "")).lower() == "enabled"})
    return pd.DataFrame(rows, columns=["position", "expected", "actual", "state",
                                       "priority", "ok"])


def _equal(prop: str, want, have) -> bool:
    if prop == "SenderDomains" or (isinstance(want, list) and prop.endswith("Domains")):
        want_l = [w for w in (want or [])]
        have_l = have if isinstance(have, list) else ([have] if have else [])
        return len(want_l) == len(have_l) and all(
            any(same_domain(w, h) for h in have_l) for w in want_l)
    if isinstance(want, list):
        have_l = have if isinstance(have, list) else ([have] if have else [])
        return sorted(str(w).lower() for w in want) == sorted(str(h).lower()
                                                              for h in have_l)
    if isinstance(want, str) and isinstance(have, str):
        return want.lower() == have.lower()
    return want == have


def _show(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def module_version(exo, requested: str, confirmed: bool) -> tuple[str, bool]:
    """The module version step 4 works with, and whether it is imported.

    Confirmed runs import the requested (or newest installed) version. A plan
    run imports nothing: importing the module has side effects (it installs
    DNSClient-PS, hydrates the organisation, 2.0 creates and removes a test
    connector; domain reference §6), so it plans with the installed version,
    or, where step 2 has not installed a CBC-capable one yet, with the version
    step 2 would install.
    """
    from runbook import install
    from runbook.powershell.versions import Version

    installed = sorted(exo.installed_module_versions(), key=Version.parse, reverse=True)
    minimum = Version.parse(seppmail.CBC_MINIMUM_VERSION)
    usable = [v for v in installed if Version.parse(v) >= minimum
              and (not requested or v == requested)]
    if usable:
        if not confirmed:
            return usable[0], False
        exo.import_module(usable[0])
        return usable[0], True
    if confirmed:
        raise ConfigureBlocked(
            f"no CBC-capable seppmail365cloud is installed (installed: "
            f"{', '.join(installed) or 'none'}); run step 2 first")
    return install.plan(exo, requested).target, False


def verdict(cp: ConfigurePlan, connectors: pd.DataFrame, rules: pd.DataFrame,
            confirmed: bool) -> tuple[str, str]:
    if not confirmed and (cp.create_connectors or cp.create_rules):
        return "planned", cp.summary()
    bad = connectors[~connectors["ok"]]
    bad_rules = rules[~rules["ok"]]
    if bad.empty and bad_rules.empty:
        return "succeeded", (f"The CBC connectors{' and rules' if cp.expected_rules else ''}"
                             f" are in place as module {cp.module_version} creates them.")
    parts = [f"{r.connector} {r.property}: expected {r.expected!r}, found {r.actual!r}"
             for r in bad.itertuples()]
    parts += [f"rule {r.position}: expected {r.expected!r}, found {r.actual!r}"
              for r in bad_rules.itertuples()]
    return "failed", "The tenant does not match: " + "; ".join(parts)
