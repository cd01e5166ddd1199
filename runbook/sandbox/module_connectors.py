"""New-, Get- and Remove-SC365Connectors of the simulated seppmail365cloud module.

Modelled on seppmail365cloud.md §1.2 (steps, in order), §1.4, §2.1 (names),
§3.1-§3.3 (the CBC values) and §5.1 (what removal reaches). The connectors
are made through the simulated Exchange cmdlets, so Exchange's own checks
(names, duplicates, rules that still route through a connector) apply.

Faults of the real module that are modelled as they are:

- `-WhatIf` skips only the New/Remove calls: ARC (and, in 2.0, the
  AllowedSenders of the Default content filter policy) still change, and with
  `-force` the existing connector is still removed (§1.2, §11.9 [I]);
- the "already exists" error of the outbound connector names an undefined
  variable, so the name is empty (§6 [I]);
- 2.0 inverts the rule test: an existing outbound connector *without*
  SEPPmail rules is an error, with rules it is replaced (§1.2, §11.2 [I]);
- the hybrid check only warns in a non-interactive session (§1.2 step 6);
- Remove-SC365Connectors touches the exact current names of one mode only
  and rewrites the HCFP IPAllowList when `-option` is absent (§1.4, §5.1).

Where the real function writes one error and carries on into more (a missing
-region or -routing in p1/p2), the sandbox stops at the first one; 1.2.5
without -region is refused the same way, where the real function would go
on with empty TLS names until Exchange refuses them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from .module_runtime import (
    Call, confirm_default_domain, empty_argument, implements, like,
    null_method, ps_date, ps_string, require_connection, rethrown, routing_of,
    tenant_id, thrown, write_error,
)
from .registry import CmdletError

log = logging.getLogger(__name__)

HYBRID_WARNING = ("!!! - Hybrid Configuration detected - we assume you know what you"
                  " are doing. Be sure to backup your connector settings before"
                  " making any change.")
INLINE_WARNING = ("You are about to create a SEPPmail INLINE Setup which will affect"
                  " ALL Domains of your Microsoft Tenant.")
# The string the ARC step looks for, case-sensitively (§1.2 step 8 [I]).
ARC_TEST = "SEPPmail.cloud"


@dataclass
class Plan:
    """What the begin block of New-SC365Connectors works out before any change."""

    routing: str
    domain: str
    smarthost: str | None
    region: dict
    certificate: str  # the inbound TlsSenderCertificateName
    stamp: str  # "... version <x.y.z> on <date>" appended to Comment


@dataclass
class Existing:
    inbound: list
    outbound: list
    rules: list


def smarthost(domain: str, routing: str) -> str | None:
    """§3.1: `<dom-dashed>.relay.seppmail.cloud` inline, `.mail.` parallel; the
    region is not part of the name."""
    dashed = domain.replace(".", "-")
    return {"inline": f"{dashed}.relay.seppmail.cloud",
            "parallel": f"{dashed}.mail.seppmail.cloud"}.get(routing)


def created_with(call: Call) -> str:
    """§2.3: the line the module appends to Comment(s)."""
    return (f"\nCreated with SEPPmail365cloud PowerShell Module version"
            f" {call.profile.module_version} on {ps_date(call.tenant.now())}")


def _second_label(value) -> str | None:
    """`$_.TlsDomain.Split('.')[1]` in a calculated property ($null on error)."""
    parts = str(value).split(".") if value else []
    return parts[1] if len(parts) > 1 else None


def module_version_of(text) -> str | None:
    """Get-SC365ModuleVersion (2.0): the first x.y.z in a Comment.

    Its guard `-like "*[SEPPMail.cloud]*"` is a wildcard character set, so it
    accepts almost any text [I].
    """
    if not like(text, "*[SEPPMail.cloud]*"):
        return "-not available in comments-"
    found = re.search(r"\d+\.\d+\.\d+", ps_string(text))
    return found.group(0) if found else None


# --- New-SC365Connectors -----------------------------------------------------------


@implements("New-SC365Connectors")
def new_connectors(call: Call) -> list:
    """§1.2 steps 1-10 in order; returns the Select-Object view of each connector."""
    require_connection(call)
    routing = routing_of(call["routing"])
    if call.trait("inline_warning") and routing == "inline":
        call.warn(INLINE_WARNING)
    domain = call["SEPPmailCloudDomain"]
    _check_domain(call, domain)
    _add_allowed_senders(call)

    plan = _plan(call, domain, routing)
    existing = _existing(call)
    _ensure_arc(call)

    output = _outbound(call, plan, existing)
    output += _inbound(call, plan, existing)
    return output


def _check_domain(call: Call, domain: str) -> None:
    """§1.2 step 1: the domain must belong to the tenant."""
    check = call.trait("connector_domain_check")
    if check == "accepted":
        names = {d["DomainName"].lower() for d in call.exo("Get-AcceptedDomain")}
        if domain.lower() not in names:
            raise write_error(call.command, f"{domain} is not member of the connected"
                              " tenant. Retry using only tenant-domains")
    elif check == "confirm":
        confirm_default_domain(call, domain)


def _add_allowed_senders(call: Call) -> None:
    """§1.2 step 3 (2.0): always rewrites AllowedSenders, even when -WhatIf."""
    addresses = call.trait("allowed_senders")
    if not addresses:
        return
    policy = call.exo("Get-HostedContentFilterPolicy", Identity="Default")
    current = list(policy[0].get("AllowedSenders") or []) if policy else []
    merged: list[str] = []
    for address in current + addresses:
        if address not in merged:  # Select-Object -Unique compares case-sensitively
            merged.append(address)
    call.exo("Set-HostedContentFilterPolicy", Identity="Default",
             AllowedSenders=merged)


def _plan(call: Call, domain: str, routing: str) -> Plan:
    """Names and values of §3.1/§3.2 derived from domain, region and routing."""
    region = call.profile.region(call["region"])
    if region is None:
        raise null_method()  # $regionConfig is $null without -region (p1/p2)
    if call.trait("inbound_certificate") == "tenant":
        # §3.2: tenant ID + the region's TLS name without the `*`.
        suffix = region["TlsCertificate"].replace("*", "")
        certificate = tenant_id(call, domain) + suffix
    else:
        certificate = region["TlsCertificate"]  # §3.3: 1.2.5 used the wildcard
    return Plan(routing, domain, smarthost(domain, routing), region, certificate,
                created_with(call))


def _existing(call: Call) -> Existing:
    """§1.2 steps 5-7: connectors, the hybrid check and existing rules."""
    inbound = call.exo("Get-InboundConnector")
    outbound = call.exo("Get-OutboundConnector", quiet=True)
    hybrid = [c for c in inbound if _cs_like(c["Name"], "Inbound from ")
              or c.get("ConnectorSource") == "HybridWizard"]
    hybrid += [c for c in outbound if _cs_like(c["Name"], "Outbound to ")
               or c.get("ConnectorSource") == "HybridWizard"]
    if hybrid and not call["force"]:
        call.warn(HYBRID_WARNING)
        if call.interactive:
            call.prompt()
    return Existing(inbound, outbound, _existing_rules(call))


def _cs_like(name: str, prefix: str) -> bool:
    """`-clike 'Inbound from *'`: case-sensitive."""
    return name.startswith(prefix)


def _existing_rules(call: Call) -> list:
    if call.trait("existing_rules_lookup") == "identity":
        return call.exo("Get-TransportRule", silent=True, quiet=True,
                        Identity="[SEPPmail.Cloud]*")
    return [r for r in call.exo("Get-TransportRule")
            if like(r.get("RouteMessageOutboundConnector"), "*SEPPmail.cloud*")
            and like(r["Name"], "*SEPPmail.cloud*")]


def _ensure_arc(call: Call) -> None:
    """§1.2 step 8: add the SEPPmail.cloud sealer; not wrapped in ShouldProcess."""
    sealer = call.trait("arc_trusted_sealer")
    try:
        configs = call.exo("Get-ArcConfig")
        current = ps_string(configs[0].get("ArcTrustedSealers")) if configs else ""
        if current and ARC_TEST not in current:
            call.exo("Set-ArcConfig", Identity="default",
                     ArcTrustedSealers=current.split(",") + [sealer])
        if not current:
            call.exo("Set-ArcConfig", Identity="default", ArcTrustedSealers=sealer)
    except CmdletError as error:
        raise rethrown(error) from error


def _outbound(call: Call, plan: Plan, existing: Existing) -> list:
    """§1.2 step 9, outbound half; §3.1 outbound columns."""
    if not plan.routing:
        # Get-SC365OutboundConnectorSettings -Routing '' (p1/p2 without -routing).
        raise empty_argument("Get-SC365OutboundConnectorSettings", "routing")
    param = call.profile.connector("outbound", plan.routing)
    param["SmartHosts"] = plan.smarthost
    param["TlsDomain"] = plan.region["TlsCertificate"]
    if call["disabled"]:
        param["Enabled"] = False
    prefix = call.params.get("NamePrefix")
    found = [c for c in existing.outbound if c["Name"].lower() == param["Name"].lower()]
    if found and not prefix:
        _replace_outbound(call, found[0], existing.rules)

    if call["inBoundOnly"] or not call.should_process(param["Name"],
                                                      "Creating Outbound Connector"):
        return []
    param["Comment"] += plan.stamp
    if prefix:
        param["Name"] = prefix + param["Name"]
    made = call.exo("New-OutboundConnector", **param)[0]
    return [{"Identity": made["Identity"], "Enabled": made["Enabled"],
             "WhenCreated": made.get("WhenCreated"),
             "Region": _second_label(made.get("TlsDomain"))}]


def _replace_outbound(call: Call, connector: dict, rules: list) -> None:
    """An outbound connector of the same name exists: prompt, refuse or remove."""
    if call.trait("connector_rule_test") == "inverted":
        replace = len(rules) >= 1  # §11.2: 2.0 tests the opposite [I]
    else:
        replace = not rules
    if not replace:
        # 2.0 interpolates the rule list here, which this branch only reaches
        # when it is empty.
        raise write_error(call.command, call.profile.message(
            "rules_still_pointing", name=connector["Identity"], rules=""))
    call.warn(f"Found existing SEPPmail.cloud outbound connector with name:"
              f" \"{connector['Name']}\" created on"
              f" \"{ps_date(connector.get('WhenCreated'))}\" pointing to SEPPmail"
              f" \"{ps_string(connector.get('TlsDomain'))}\" ")
    if call.interactive and not call["force"]:
        call.prompt()
    if not call["force"]:
        raise thrown("Outbound connector  already exists")  # $outbound is undefined
    try:
        call.exo("Remove-OutboundConnector", Identity=connector["Name"], Confirm=False)
    except CmdletError as error:
        # The module catches this and only echoes $error[0]; New-… fails next.
        log.debug("module swallowed: %s", error.message)


def _inbound(call: Call, plan: Plan, existing: Existing) -> list:
    """§1.2 step 9, inbound half; §3.1 inbound columns; §1.2 step 10."""
    param = call.profile.connector("inbound", plan.routing)
    if call["disabled"]:
        param["Enabled"] = False
    prefix = call.params.get("NamePrefix")
    found = [c for c in existing.inbound if c["Name"].lower() == param["Name"].lower()]
    if found and not prefix:
        _replace_inbound(call, found[0], param["Name"])

    if plan.routing == "parallel":
        param["RestrictDomainsToIPAddresses"] = False
    if plan.routing == "inline":
        tenant_cert = call.trait("inbound_certificate") == "tenant"
        param["SenderDomains"] = ("smtp:*;1" if tenant_cert
                                  else f"smtp:{plan.region['TlsCertificate']};1")
    param["TlsSenderCertificateName"] = plan.certificate
    if call.params.get("InboundEFSkipIPs"):
        param["EFSkipIPs"] = plan.region["IPv4AllowList"] + plan.region["IPv6AllowList"]
    if not call.should_process(param["Name"], "Creating Inbound Connector"):
        return []
    param["Comment"] += plan.stamp
    if prefix:
        param["Name"] = prefix + param["Name"]
    made = call.exo("New-InboundConnector", **param)[0]
    region = (None if call.trait("inbound_output_region") == "missing"
              else _second_label(made.get("TlsSenderCertificateName")))
    output = [{"Identity": made["Identity"], "Enabled": made["Enabled"],
               "WhenCreated": made.get("WhenCreated"), "Region": region}]
    if "AntiSpamAllowListing" in (call.params.get("option") or []):
        _allow_list_region(call, plan.region)
    return output


def _replace_inbound(call: Call, connector: dict, name: str) -> None:
    call.warn(f"Found existing SEPPmail.cloud inbound connector with name:"
              f" \"{connector['Name']}\", created"
              f" \"{ps_date(connector.get('WhenCreated'))}\" incoming SEPPmail is"
              f" \"{ps_string(connector.get('TlsSenderCertificateName'))}\"")
    if call.interactive and not call["force"]:
        call.prompt()
    if not call["force"]:
        raise thrown(f"Inbound connector {name} already exists")
    call.exo("Remove-InboundConnector", Identity=connector["Name"], Confirm=False)


def _allow_list_region(call: Call, region: dict) -> None:
    """-option AntiSpamAllowListing (≤1.3.5): merge the region's AllowList."""
    policy = call.exo("Get-HostedConnectionFilterPolicy")[0]
    current = list(policy.get("IPAllowList") or [])
    merged = (sorted(set(current + region["IPv4AllowList"]), key=str.lower)
              if current else list(region["IPv4AllowList"]))
    if merged:
        call.exo("Set-HostedConnectionFilterPolicy", Identity=policy["Id"],
                 IPAllowList=merged)


# --- Get-SC365Connectors -----------------------------------------------------------


@implements("Get-SC365Connectors")
def get_connectors(call: Call) -> list:
    """§1.4: the mode's connectors by exact name, with Region (and 2.0 version)."""
    require_connection(call)
    routing = routing_of(call["routing"])
    shape = call.trait("get_connectors")
    parts = [_get_inbound(call, routing, shape)]
    if not call.params.get("inBoundOnly"):
        outbound = _get_outbound(call, routing, shape)
        parts = [outbound] + parts if shape == "outbound-first" else parts + [outbound]
    return [item for part in parts for item in part]


def _get_outbound(call: Call, routing: str, shape: str) -> list:
    name = call.profile.connector("outbound", routing).get("Name")
    found = [c for c in call.exo("Get-OutboundConnector", silent=True, quiet=True,
                                 Identity=name)
             if c["Identity"].lower() == (name or "").lower()]
    if not found:
        tail = (". Wrong routing mode or Inboundonly ?" if shape == "outbound-first"
                else " - Wrong routing mode or inbound only ?")
        call.warn(f"No SEPPmail.cloud Outbound Connector with name \"{name}\""
                  f" found{tail}")
        return []
    return [_connector_view(c, c.get("TlsDomain"), shape) for c in found]


def _get_inbound(call: Call, routing: str, shape: str) -> list:
    name = call.profile.connector("inbound", routing).get("Name")
    found = [c for c in call.exo("Get-InboundConnector", silent=True, quiet=True,
                                 Identity=name)
             if c["Identity"].lower() == (name or "").lower()]
    if not found:
        call.warn(f"No SEPPmail.cloud Inbound Connector with Name \"{name}\" found -"
                  " Wrong routing mode ?")
        return []
    return [_connector_view(c, c.get("TlsSenderCertificateName"), shape)
            for c in found]


def _connector_view(connector: dict, tls_name, shape: str) -> dict:
    if shape == "full":
        view = dict(connector)
        view["SC365ModuleVersion"] = module_version_of(connector.get("Comment"))
        view["Region"] = _second_label(tls_name)
        return view
    return {"Name": connector["Name"], "Enabled": connector["Enabled"],
            "WhenCreated": connector.get("WhenCreated"),
            "Region": _second_label(tls_name)}


# --- Remove-SC365Connectors --------------------------------------------------------


@implements("Remove-SC365Connectors")
def remove_connectors(call: Call) -> list:
    """§1.4/§5.1: outbound then inbound, by the mode's exact current name only.

    Legacy, slash-named and other-mode connectors stay. When `-option` is
    absent, the removed inbound connector's SenderIPAddresses are taken out
    of the HCFP IPAllowList, and the list is written back whenever it is not
    empty.
    """
    require_connection(call)
    routing = routing_of(call["routing"])
    inbound_only = bool(call.params.get("inBoundOnly"))
    inbound_name = call.profile.connector("inbound", routing)["Name"]
    policy = call.exo("Get-HostedConnectionFilterPolicy")[0]

    if not inbound_only:
        _remove_outbound(call, call.profile.connector("outbound", routing)["Name"])
    if call.should_process(inbound_name,
                           f"Remove SEPPmail inbound connector {inbound_name}"):
        _remove_inbound(call, inbound_name, policy)
    return []


def _remove_outbound(call: Call, name: str) -> None:
    if not call.should_process(name, f"Remove SEPPmail outbound connector {name}"):
        return
    if any(c["Name"].lower() == name.lower()
           for c in call.exo("Get-OutboundConnector", quiet=True)):
        call.exo("Remove-OutboundConnector", Identity=name, Confirm=False)
    else:
        call.warn("No SEPPmail Outbound Connector found")


def _remove_inbound(call: Call, name: str, policy: dict) -> None:
    found = [c for c in call.exo("Get-InboundConnector")
             if c["Name"].lower() == name.lower()]
    if not found:
        call.warn("No SEPPmail.Cloud Inbound Connector found")
        return
    connector = found[0]
    addresses = []
    if connector.get("TlsSenderCertificateName"):
        addresses = [part for value in connector.get("SenderIPAddresses") or []
                     for part in str(value).split(" ")]
    call.exo("Remove-InboundConnector", Identity=name, Confirm=False)
    option = call.params.get("option")
    still_there = any(c["Identity"].lower() == name.lower()
                      for c in call.exo("Get-InboundConnector"))
    if like(option, "AntiSpamAllowListing") or still_there:
        return
    allow = list(policy.get("IPAllowList") or [])
    if allow:
        for address in addresses:
            if address in allow:  # ArrayList.Remove: first equal item, ordinal
                allow.remove(address)
        call.exo("Set-HostedConnectionFilterPolicy", Identity=policy["Id"],
                 IPAllowList=allow)
