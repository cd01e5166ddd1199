"""New-, Get- and Remove-SC365Rules of the simulated seppmail365cloud module.

Modelled on seppmail365cloud.md §1.3 (parameters and guards), §1.4, §2.2
(names, order, priority calculation), §2.3 (contents) and §5.1 (patterns).
Rules are made with the simulated New-TransportRule, so Exchange's checks
apply too: a rule can route only through an enabled, rule-scoped connector,
and a priority inserts the rule and moves the others down.

Faults of the real module that are modelled as they are:

- p1 tests its domain list with `-contains` against the whole array, which
  PowerShell compares as one space-joined string: two or more domains are
  "not member of the connected tenant" [I, §1.3];
- the 2.0.2 special case for rule 110 still uses the old 1.3.8 name, so
  neither 110 nor 120 gets RecipientDomainIs and 110 no PGP condition (§2.3,
  §11.1);
- in 2.0 the outbound-connector guard runs inside ShouldProcess, so
  `-WhatIf` skips it (§1.3);
- 1.2.5 and p1 report the ExceptIf… lists as ExcludedDomains (empty for p1's
  inclusion rules); 2.0.2 reads rule 200's domains from a misspelt property,
  so IncludedDomains is empty there (§1.4 [I]).
"""

from __future__ import annotations

import logging

from .module_connectors import created_with, module_version_of
from .module_runtime import (
    Call, confirm_default_domain, implements, like, matches, ne_true_is_truthy,
    ps_string, require_connection, rethrown, routing_of, thrown, write_error,
)
from .registry import CmdletError

log = logging.getLogger(__name__)

RULE_060 = "[SEPPmail.cloud] - 060 Add header X-SM-ruleversion"
RULE_100 = "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail"
RULE_110_TAGGED = "[SEPPmail.cloud] - 110 Route incoming tagged e-mails to SEPPmail"
RULE_200 = "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"

# §2.3 rule 100 with CryptoContentOnly: the content-type words.
CRYPTO_CONTENT_TYPES = [
    "application/x-pkcs7-mime", "application/pkcs7-mime",
    "application/x-pkcs7-signature", "application/pkcs7-signature",
    "multipart/signed", "application/pgp-signature", "multipart/encrypted",
    "application/pgp-encrypted", "application/octet-stream",
]
DISABLED_GUARD = ("SEPPmail.cloud outbound-connector is disabled, cannot create"
                  " rules. Create connectors without -Disable switch, or enable them"
                  " in the admin portal.")
SEPPMAIL_RULE = r"\[SEPPmail*"  # §5.1: also matches appliance `[SEPPmail]` rules


def _sections(call: Call, routing: str) -> list[tuple[dict, dict]]:
    """(file entry, the mode's settings) for every file with a section (§2.2)."""
    found = []
    for entry in call.profile.rule_files():
        settings = entry["routing"].get(routing) or {}
        if settings:
            found.append((entry, settings))
    return found


# --- New-SC365Rules ----------------------------------------------------------------


@implements("New-SC365Rules")
def new_rules(call: Call) -> list:
    """§1.3: guards, then one New-TransportRule per file of the mode, in order."""
    require_connection(call)
    routing = routing_of(call["routing"])
    domains = call["SEPPmailCloudDomain"]
    _check_domains(call, domains)
    listed = ([d for d in domains if not like(d, "*.onmicrosoft.com")]
              if call.trait("drops_onmicrosoft") else list(domains))
    _outbound_guard(call)

    try:
        placement = _placement(call)
        _refuse_existing_rules(call)
        return _create(call, routing, domains, listed, placement)
    except CmdletError as error:
        raise rethrown(error) from error


def _check_domains(call: Call, domains: list[str]) -> None:
    check = call.trait("rule_domain_check")
    if check == "accepted-joined":
        # `$TenantDomains.DomainName -contains $SEPPmailCloudDomain`: the array on
        # the right becomes one string, "a.ch b.ch" [I].
        wanted = ps_string(domains)
        names = {d["DomainName"].lower() for d in call.exo("Get-AcceptedDomain")}
        if wanted.lower() not in names:
            raise write_error(call.command, f"{wanted} is not member of the connected"
                              " tenant. Retry using only tenant-domains")
    elif check == "confirm":
        for domain in domains:
            confirm_default_domain(call, domain)


def _outbound_guard(call: Call) -> None:
    """§1.3: an enabled outbound connector matching `^\\[SEPPmail.cloud\\]`."""
    connectors = [c for c in call.exo("Get-OutboundConnector",
                                      IncludeTestModeConnectors=True)
                  if matches(c["Name"], r"^\[SEPPmail.cloud\]")]
    if call.trait("rule_guard_in_should_process") and not call.should_process(
            "Exchange Online", "Check existence of Outbound Connector"):
        return
    if not connectors:
        raise thrown(call.profile.message("no_outbound_connector"))
    if ne_true_is_truthy([c["Enabled"] for c in connectors]):
        raise thrown(DISABLED_GUARD)


def _placement(call: Call) -> int:
    """§2.2: Top is 0; Bottom is the number of rules not matching `\\[SEPPmail*`."""
    others = [r for r in call.exo("Get-TransportRule")
              if not matches(r["Name"], SEPPMAIL_RULE)]
    return 0 if str(call["PlacementPriority"]).lower() == "top" else len(others)


def _refuse_existing_rules(call: Call) -> None:
    """§1.3: existing `[SEPPmail*` rules — interactive asks, otherwise a throw."""
    existing = [r for r in call.exo("Get-TransportRule")
                if matches(r["Name"], SEPPMAIL_RULE)]
    if not existing:
        return
    if call.interactive:
        call.warn("Found existing [SEPPmail* transport rules.")
        call.warn("--------------------------------------------")
        for rule in existing:
            call.warn(f"Rule name \"{rule['Name']}\" with state \"{rule['State']}\""
                      f" has priority \"{rule['Priority']}\"")
        call.warn("--------------------------------------------")
        call.prompt()
    raise thrown("SEPPmail* transport rules already exist")


def _create(call: Call, routing: str, domains: list, listed: list,
            placement: int) -> list:
    excluded = _excluded_domains(call, domains)
    output = []
    for index, (entry, settings) in enumerate(_sections(call, routing)):
        if call.trait("rule_priority") == "smpriority":
            settings["Priority"] = placement + entry["SMPriority"][routing]
        else:
            settings["Priority"] = placement + index  # 2.0.2: by file order
        if call["Disabled"]:
            settings["Enabled"] = False
        settings["Comments"] += created_with(call)
        if not call.should_process(settings["Name"], "Create transport rule"):
            continue
        _customise(call, settings, listed, excluded)
        made = call.exo("New-TransportRule", **settings)
        if call.trait("rule_output") == "selected":
            output += [{"Identity": r["Identity"], "Priority": r["Priority"],
                        "State": r["State"]} for r in made]
        else:
            output += made
    return output


def _excluded_domains(call: Call, domains: list) -> list:
    """1.2.5: accepted domains minus the SEPPmail domains (§2.3 last bullet)."""
    if call.trait("rule_domain_lists") != "exclude":
        return []
    remaining = [d["DomainName"] for d in call.exo("Get-AcceptedDomain")]
    for domain in domains:
        if domain in remaining:  # ArrayList.Remove: first equal item, ordinal
            remaining.remove(domain)
    return remaining


def _customise(call: Call, settings: dict, listed: list, excluded: list) -> None:
    """The per-rule overrides of §2.3 (the module's `switch ($setting.Name)`)."""
    name = settings["Name"].lower()
    include = call.trait("rule_domain_lists") == "include"
    crypto = call.params.get("CryptoContentOnly")
    if name == RULE_060.lower():
        settings["SetHeaderValue"] = call.profile.module_version
    elif name == RULE_100.lower():
        if include:
            settings["RecipientDomainIs"] = listed
        else:
            settings["ExceptIfRecipientDomainIs"] = excluded
        if call["SCLInboundValue"] != 5:
            settings["ExceptIfSCLOver"] = call["SCLInboundValue"]
        if crypto:
            settings["HeaderContainsMessageHeader"] = "content-type"
            settings["HeaderContainsWords"] = list(CRYPTO_CONTENT_TYPES)
    elif name == RULE_110_TAGGED.lower():
        # The 1.3.8 name; no file of a modelled version carries it any more
        # (§2.3: 2.0.2's 110 and 120 fall through to the default branch).
        settings["RecipientDomainIs"] = listed
        if crypto:
            settings["SubjectOrBodyContainsWords"] = (
                list(settings.get("SubjectOrBodyContainsWords") or [])
                + ["-----BEGIN PGP"])
    elif name == RULE_200.lower():
        if include:
            settings["SenderDomainIs"] = listed
        else:
            settings["ExceptIfSenderDomainIs"] = excluded


# --- Get-SC365Rules ----------------------------------------------------------------


@implements("Get-SC365Rules")
def get_rules(call: Call) -> list:
    """§1.4: ≤1.3.0 the mode's JSON names; 2.0 `-Identity '[SEPPmail*'`."""
    require_connection(call)
    style = call.trait("get_rules")
    if style == "identity-wildcard":
        return _get_by_pattern(call)
    routing = routing_of(call.params.get("routing"))
    if style == "json-names-excluded" and routing != "parallel":
        return []  # 1.2.5/p1 write "No transport rules needed" as information
    output = []
    label = "ExcludedDomains" if style == "json-names-excluded" else "IncludedDomains"
    for _, settings in _sections(call, routing):
        found = call.exo("Get-TransportRule", silent=True, Identity=settings["Name"])
        if not found:
            call.warn(f"No transport rule '{settings['Name']}'")
            continue
        output += [_rule_view(rule, label) for rule in found]
    return output


def _rule_view(rule: dict, label: str) -> dict:
    if like(rule["Identity"], "*100*"):
        domains = rule.get("ExceptIfRecipientDomainIs" if label == "ExcludedDomains"
                           else "RecipientDomainIs")
    elif like(rule["Identity"], "*200*"):
        domains = rule.get("ExceptIfSenderDomainIs" if label == "ExcludedDomains"
                           else "SenderDomainIs")
    else:
        domains = None  # Select-Object of a property the rule does not have
    return {"Identity": rule["Identity"], "Priority": rule["Priority"],
            "State": rule["State"], label: domains}


def _get_by_pattern(call: Call) -> list:
    rules = call.exo("Get-TransportRule", Identity="[SEPPmail*")
    if not rules:
        call.warn("No transport rules found matching [SEPPmail.Cloud]* in your tenant.")
    output = []
    for rule in rules:
        view = dict(rule)
        if like(rule["Identity"], "*100*"):
            view["IncludedDomains"] = rule.get("RecipientDomainIs")
        if like(rule["Identity"], "*200*"):
            view["IncludedDomains"] = rule.get("SenderDomainDomainIs")  # sic (§1.4)
        view["SC365ModuleVersion"] = module_version_of(rule.get("Comments"))
        output.append(view)
    return output


# --- Remove-SC365Rules -------------------------------------------------------------


@implements("Remove-SC365Rules")
def remove_rules(call: Call) -> list:
    """§1.4/§5.1: ≤1.3.0 the mode's JSON names; 2.0 `[SEPPmail.cloud]*`.

    Rules with legacy names (before 1.0.5), other modes' names and appliance
    `[SEPPmail]` rules stay (up to 1.3.0); 2.0 reaches every rule whose name
    starts with `[SEPPmail.cloud]`.
    """
    require_connection(call)
    style = call.trait("remove_rules")
    if style == "pattern":
        for rule in call.exo("Get-TransportRule", silent=True,
                             Identity="[SEPPmail.cloud]*"):
            if call.should_process(rule["Name"], "Remove transport rule"):
                call.exo("Remove-TransportRule", Identity=rule["Identity"],
                         Confirm=False)
        return []
    routing = routing_of(call["routing"])
    if style == "json-names-warn" and routing != "parallel":
        call.warn("Routingtype 'inline' doesnt require any Mail Transport Rules. Use"
                  " '-routing 'parallel'' to remove existing rules.")
        return []
    for _, settings in _sections(call, routing):
        if not call.should_process(settings["Name"], "Remove transport rule"):
            continue
        found = call.exo("Get-TransportRule", silent=True, Identity=settings["Name"])
        for rule in found:
            call.exo("Remove-TransportRule", Identity=rule["Identity"], Confirm=False)
        if not found and style == "json-names-warn":
            call.warn(f"Rule {settings['Name']} does not exist")
    return []
