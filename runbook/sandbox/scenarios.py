"""Sandbox scenarios: realistic starting tenants, built fresh and deterministically.

Each scenario is a function that seeds a state (runbook.sandbox.state) with
what such a tenant really holds. What the SEPPmail.cloud module left behind
follows seppmail365cloud.md: connector values §3.1/§3.3 (1.2.5 = pre-CBC),
rule names, order and contents §2.2/§2.3 (1.2.5 column), names §2.1, hosts and
region addresses §4, the CBC readiness record §3.2. Exchange object shapes come
from the builders in runbook.sandbox.exo, so seeded objects look exactly like
created ones. GUIDs derive from the scenario and object names, so two builds of
one scenario compare equal object for object (only times follow the clock).

This module does not import `runbook.seppmail` (the runbook's own facts): the
sandbox is an independent model, so a wrong fact in the runbook shows up as a
failing test instead of agreeing with itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from . import exo
from .state import SCHEMA, iso, new_guid

log = logging.getLogger(__name__)

# seppmail365cloud.md §4, IPv4 lists of 2.0.2 (Gate, Relay, Mail, AllowList).
REGIONS = {
    "ch": {"gate": ["86.119.35.35", "217.20.196.81"],
           "relay": ["86.119.38.33", "217.20.196.83"],
           "mail": ["217.20.196.82", "86.119.37.4"],
           "allow": ["86.119.9.0/29", "86.119.57.0/29", "217.20.196.64/27"]},
    "de": {"gate": ["49.12.23.112", "167.233.8.136"],
           "relay": ["162.55.72.221", "162.55.72.222"],
           "mail": ["162.55.155.177", "49.12.22.120"],
           "allow": ["162.55.72.192/27"]},
    "prv": {"gate": ["49.12.21.237"], "relay": ["116.202.109.112"],
            "mail": ["49.12.100.186"],
            "allow": ["78.47.79.19", "49.12.100.186", "142.132.235.199",
                      "162.55.174.218"]},
}

# When the tenants were made and when module 1.2.5 set them up (its release
# month, seppmail365cloud.md §0). Fixed, so builds compare.
TENANT_CREATED = datetime(2019, 3, 4, 8, 15, 0, tzinfo=timezone.utc)
SETUP_125 = datetime(2022, 11, 21, 9, 30, 0, tzinfo=timezone.utc)
SETUP_09 = datetime(2022, 5, 10, 14, 5, 0, tzinfo=timezone.utc)
SETUP_130 = datetime(2023, 2, 14, 10, 0, 0, tzinfo=timezone.utc)

DEFAULT_PROPAGATION_DELAY_S = 2.0
DEFAULT_TRACE_LATENCY_S = 1.0
DEFAULT_TRAFFIC_INTERVAL_S = 5.0
TRAFFIC_HISTORY = timedelta(hours=1)
EXTERNAL_SENDER_IP = "203.0.113.25"  # RFC 5737 documentation range


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    tenant: str
    tenant_id: str
    domains: tuple[str, ...]
    region: str
    routing: str
    seed: Callable[[dict, "Scenario", int], None]
    module: str | None = "1.2.5"
    prepared: bool = True


def dashed(domain: str) -> str:
    """seppmail365cloud.md §3.1: `<dom-dashed>` = every `.` replaced by `-`."""
    return domain.replace(".", "-")


def cbc_record_name(tenant_id: str) -> str:
    """seppmail365cloud.md §3.2: `<sha1 hex of the tenant id>.cbc.seppmail.cloud`."""
    return hashlib.sha1(tenant_id.encode("ascii")).hexdigest() + ".cbc.seppmail.cloud."


# --- the base tenant -----------------------------------------------------------

def _base(sc: Scenario, now: datetime, delay: float) -> dict:
    default = sc.domains[0]
    initial = f"{sc.tenant}.onmicrosoft.com"
    state = {
        "schema": SCHEMA, "scenario": sc.name, "description": sc.description,
        "tenant": {"name": sc.tenant, "tenant_id": sc.tenant_id,
                   "initial_domain": initial, "default_domain": default},
        "propagation_delay_s": delay,
        "accepted_domains": [], "inbound_connectors": [], "outbound_connectors": [],
        "transport_rules": [], "organization_config": None, "arc_config": None,
        "hosted_connection_filter_policy": None,
        "hosted_content_filter_policy": None, "gallery": None,
        "installed_modules": [], "dns": {"records": []}, "changes": [],
        "traffic": None, "other_tenants": [],
    }
    for domain in sc.domains:
        state["accepted_domains"].append(exo.accepted_domain(
            state, domain, TENANT_CREATED, default=domain == default))
    state["accepted_domains"].append(exo.accepted_domain(
        state, initial, TENANT_CREATED, initial=True))
    state["organization_config"] = exo.organization_config(
        state, TENANT_CREATED, dehydrated=False)
    state["hosted_connection_filter_policy"] = exo.connection_filter_policy(
        state, TENANT_CREATED)
    state["hosted_content_filter_policy"] = exo.content_filter_policy(
        state, TENANT_CREATED)
    state["traffic"] = _traffic(sc, now)
    return state


def _traffic(sc: Scenario, now: datetime) -> dict:
    """What the message trace derives its rows from (runbook.sandbox.trace).

    One inbound and one outbound test message per interval between an
    external correspondent and a mailbox of the default domain, for the last
    hour before the build and on from there.
    """
    mailbox = f"anna.meier@{sc.domains[0]}"
    return {
        "start": iso(now - TRAFFIC_HISTORY),
        "interval_s": DEFAULT_TRAFFIC_INTERVAL_S,
        "trace_latency_s": DEFAULT_TRACE_LATENCY_S,
        "flows": [
            {"direction": "inbound", "sender": "orders@partner.example",
             "recipient": mailbox, "from_ip": EXTERNAL_SENDER_IP,
             "subject": "Sandbox inbound test", "size": 24817},
            {"direction": "outbound", "sender": mailbox,
             "recipient": "orders@partner.example", "from_ip": "",
             "subject": "Sandbox outbound test", "size": 18342},
        ],
    }


def _module_comment(version: str, when: datetime) -> str:
    """seppmail365cloud.md §2.3: the module's note in Comment(s)."""
    return (f"Created with SEPPmail365cloud PowerShell Module version {version}"
            f" on {when.strftime('%m/%d/%Y %H:%M:%S')}")


def installed_entries(versions: list[str]) -> list[dict]:
    """ExchangeOnlineManagement (every session needs it) plus seppmail365cloud,
    as the module engineer's gallery writes Install-Module's entries."""
    from . import gallery

    entries = gallery.default_installed_modules(TENANT_CREATED, seppmail_version=None)
    entries += [gallery.installed_entry("seppmail365cloud", v, SETUP_125)
                for v in versions]
    return entries


# --- DNS ---------------------------------------------------------------------------

def _record(name: str, rtype: str, value: str, ttl: int = 3600) -> dict:
    return {"name": name if name.endswith(".") else name + ".", "type": rtype,
            "ttl": ttl, "value": value}


def _seppmail_hosts(domain: str, region: str, hosts: tuple[str, ...]) -> list[dict]:
    """A records of the provisioned SEPPmail.cloud hosts (§4), region addresses."""
    records = []
    for host in hosts:
        for address in REGIONS[region][host]:
            records.append(_record(f"{dashed(domain)}.{host}.seppmail.cloud", "A",
                                   address, ttl=300))
    return records


def _mx(domain: str, target: str) -> dict:
    return _record(domain, "MX", f"10 {target}.")


def microsoft_mx(domain: str) -> str:
    return f"{dashed(domain)}.mail.protection.outlook.com"


def gate_host(domain: str) -> str:
    """seppmail365cloud.md §4: the inline MX target is the gate host."""
    return f"{dashed(domain)}.gate.seppmail.cloud"


def _dns(state: dict, sc: Scenario, *, mx_at_gate: dict[str, bool] | None = None,
         on_seppmail: tuple[str, ...] | None = None) -> None:
    """MX per mode, SEPPmail hosts per mode, SPF, and the CBC readiness TXT."""
    on_seppmail = sc.domains if on_seppmail is None else on_seppmail
    records = state["dns"]["records"]
    hosts = ("gate", "relay") if sc.routing == "inline" else ("mail",)
    for domain in sc.domains:
        at_gate = (mx_at_gate or {}).get(domain, sc.routing == "inline")
        records.append(_mx(domain, gate_host(domain) if at_gate
                           else microsoft_mx(domain)))
        spf = "v=spf1 include:spf.protection.outlook.com"
        if domain in on_seppmail:
            spf += " include:spf.seppmail.cloud"
            records.extend(_seppmail_hosts(domain, sc.region, hosts))
        records.append(_record(domain, "TXT", f'"{spf} -all"'))
    initial = state["tenant"]["initial_domain"]
    records.append(_mx(initial, microsoft_mx(initial)))
    if sc.prepared:
        records.append(_record(cbc_record_name(sc.tenant_id), "TXT",
                               f'"seppmail-cbc={sc.tenant_id}"', ttl=300))


# --- what the SEPPmail.cloud module set up ---------------------------------------

def _tls_wildcard(region: str) -> str:
    return f"*.{region}.seppmail.cloud"


def seed_125_inline(state: dict, sc: Scenario, when: datetime = SETUP_125) -> None:
    """Module 1.2.5, inline: the two InLine connectors, no rules.

    seppmail365cloud.md §3.3: inbound cert `*.<region>.seppmail.cloud`,
    SenderDomains `smtp:*.<region>.seppmail.cloud;1`; Outbound-InLine is not
    rule-scoped (p1 kept it so, with RecipientDomains `*`, §3.1); no inline
    rules before p2 (§2.2). Smarthost from the default domain (§1.4 New-SC365Setup).
    """
    comment = _module_comment("1.2.5", when)
    domain = sc.domains[0]
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail.cloud] Inbound-InLine", when, Comment=comment,
        ConnectorType="Partner", RequireTls=True, RestrictDomainsToCertificate=True,
        SenderDomains=[f"smtp:*.{sc.region}.seppmail.cloud;1"],
        TlsSenderCertificateName=_tls_wildcard(sc.region)))
    state["outbound_connectors"].append(exo.outbound_connector(
        state, "[SEPPmail.cloud] Outbound-InLine", when, Comment=comment,
        ConnectorType="Partner", UseMXRecord=False, RecipientDomains=["*"],
        SmartHosts=[f"{dashed(domain)}.relay.seppmail.cloud"],
        TlsSettings="DomainValidation", TlsDomain=_tls_wildcard(sc.region),
        IsTransportRuleScoped=False))
    state["arc_config"] = exo.arc_config(state, "SEPPmail.cloud", when)


def seed_125_parallel(state: dict, sc: Scenario, when: datetime = SETUP_125) -> None:
    """Module 1.2.5, parallel: the two Parallel connectors and rules 050-600.

    seppmail365cloud.md §3.1/§3.3 (OnPremises, pre-CBC cert), §2.2 1.2.5
    column (050 p0, 100 p1, 200 p2, 300-600 p3-6), §2.3 contents with the
    1.2.5 exclusion lists (accepted domains minus the SEPPmail domains).
    """
    comment = _module_comment("1.2.5", when)
    domain = sc.domains[0]
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail.cloud] Inbound-Parallel", when, Comment=comment,
        ConnectorType="OnPremises", RequireTls=True,
        RestrictDomainsToCertificate=True, RestrictDomainsToIPAddresses=False,
        SenderDomains=["smtp:*;1"], TlsSenderCertificateName=_tls_wildcard(sc.region)))
    outbound = "[SEPPmail.cloud] Outbound-Parallel"
    state["outbound_connectors"].append(exo.outbound_connector(
        state, outbound, when, Comment=comment, ConnectorType="OnPremises",
        UseMXRecord=False, SmartHosts=[f"{dashed(domain)}.mail.seppmail.cloud"],
        TlsSettings="DomainValidation", TlsDomain=_tls_wildcard(sc.region),
        IsTransportRuleScoped=True))
    others = [d["DomainName"] for d in state["accepted_domains"]
              if d["DomainName"] not in sc.domains]
    _add_rules(state, _rules_125_parallel(outbound, others, comment), when)
    state["arc_config"] = exo.arc_config(state, "SEPPmail.cloud", when)


def _rules_125_parallel(outbound: str, excluded: list[str], comment: str) -> list:
    out = {"FromScope": "InOrganization", "SentToScope": "NotInOrganization"}
    audit = {"SetAuditSeverity": "DoNotAudit", "Comments": comment}
    rules = [
        ("[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud", {
            "HeaderContainsMessageHeader": "Authentication-Results",
            "HeaderContainsWords": ["spf=fail"], "SetHeaderName": "X-SM-internal",
            "SetHeaderValue": "yes"}),
        ("[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail", {
            "FromScope": "NotInOrganization", "SentToScope": "InOrganization",
            "ExceptIfRecipientDomainIs": excluded or None,
            "ExceptIfHeaderMatchesMessageHeader": "X-SM-internal",
            "ExceptIfHeaderMatchesPatterns": ["yes"],
            "ExceptIfHeaderContainsMessageHeader": "X-SM-incoming",
            "ExceptIfHeaderContainsWords": ["yes"], "ExceptIfSCLOver": 5,
            "RouteMessageOutboundConnector": outbound,
            "SetHeaderName": "X-SM-maildirection", "SetHeaderValue": "inbound"}),
        ("[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail", {
            **out, "ExceptIfSenderDomainIs": excluded or None,
            "ExceptIfHeaderMatchesMessageHeader": "X-SM-internal",
            "ExceptIfHeaderMatchesPatterns": ["yes"],
            "ExceptIfHeaderContainsMessageHeader": "X-SM-outgoing",
            "ExceptIfHeaderContainsWords": ["yes"], "ExceptIfMessageTypeMatches": "OOF",
            "ExceptIfSCLOver": 9, "RouteMessageOutboundConnector": outbound,
            "SetHeaderName": "X-SM-maildirection", "SetHeaderValue": "outbound"}),
    ]
    for number, header in ((300, "decrypted"), (400, "encrypted"),
                           (500, "outgoing"), (600, "smarthost")):
        rules.append((f"[SEPPmail.cloud] - {number} Clean outbound SEPPmail header"
                      f" {header}", {**out, "RemoveHeader": f"X-SM-{header}"}))
    return [(name, {**audit, **props}) for name, props in rules]


def seed_130_inline(state: dict, sc: Scenario, when: datetime = SETUP_130) -> None:
    """Module 1.3.0, inline with CBC: what a finished migration looks like.

    seppmail365cloud.md §3.1 (CBC values: cert `<tenantId>.<region>.seppmail
    .cloud`, SenderDomains `smtp:*;1`, Outbound-InLine rule-scoped from p2),
    §2.2 (p2-1.3.1 inline: 060 at i0, 200 at i1), §2.3 (inline 200: InOrg to
    NotInOrg, SenderDomainIs, SCL over 9).
    """
    comment = _module_comment("1.3.0", when)
    domain = sc.domains[0]
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail.cloud] Inbound-InLine", when, Comment=comment,
        ConnectorType="Partner", RequireTls=True, RestrictDomainsToCertificate=True,
        SenderDomains=["smtp:*;1"],
        TlsSenderCertificateName=f"{sc.tenant_id}.{sc.region}.seppmail.cloud"))
    outbound = "[SEPPmail.cloud] Outbound-InLine"
    state["outbound_connectors"].append(exo.outbound_connector(
        state, outbound, when, Comment=comment, ConnectorType="Partner",
        UseMXRecord=False, SmartHosts=[f"{dashed(domain)}.relay.seppmail.cloud"],
        TlsSettings="DomainValidation", TlsDomain=_tls_wildcard(sc.region),
        IsTransportRuleScoped=True))
    audit = {"SetAuditSeverity": "DoNotAudit", "Comments": comment}
    _add_rules(state, [
        ("[SEPPmail.cloud] - 060 Add header X-SM-ruleversion", {
            **audit, "SetHeaderName": "X-SM-ruleversion", "SetHeaderValue": "1.3.0"}),
        ("[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail", {
            **audit, "FromScope": "InOrganization", "SentToScope": "NotInOrganization",
            "SenderDomainIs": list(sc.domains), "ExceptIfSCLOver": 9,
            "RouteMessageOutboundConnector": outbound}),
    ], when)
    state["arc_config"] = exo.arc_config(state, "SEPPmail.cloud", when)


def _add_rules(state: dict, rules: list[tuple[str, dict]], when: datetime) -> None:
    """Append rules at the bottom, as PlacementPriority Bottom does (§2.2)."""
    for name, props in rules:
        props = {k: v for k, v in props.items() if v is not None}
        state["transport_rules"].append(exo.transport_rule(
            state, name, when, priority=len(state["transport_rules"]),
            author="Administrator", **props))


# --- objects that are not SEPPmail's ----------------------------------------------

def seed_unrelated(state: dict, sc: Scenario, when: datetime = TENANT_CREATED) -> None:
    """What any tenant has beside SEPPmail: a hybrid inbound connector (name
    `Inbound from <guid>`, ConnectorSource HybridWizard, seppmail365cloud.md
    §1.2 step 6), a partner TLS connector, a disclaimer and a warning rule."""
    domain = sc.domains[0]
    hybrid = new_guid(f"{sc.tenant_id}:hybrid")
    state["inbound_connectors"].append(exo.inbound_connector(
        state, f"Inbound from {hybrid}", when, ConnectorType="OnPremises",
        ConnectorSource="HybridWizard", CloudServicesMailEnabled=True,
        SenderDomains=["smtp:*;1"], RequireTls=True,
        TlsSenderCertificateName=f"mail.{domain}"))
    state["outbound_connectors"].append(exo.outbound_connector(
        state, "Partner TLS - Northwind Traders", when, ConnectorType="Partner",
        RecipientDomains=["northwindtraders.example"], TlsSettings="DomainValidation",
        TlsDomain="northwindtraders.example"))
    name = sc.tenant.capitalize()
    _add_rules(state, [
        (f"{name} external disclaimer", {
            "FromScope": "InOrganization", "SentToScope": "NotInOrganization",
            "ApplyHtmlDisclaimerText": f"<p>{name} AG - confidential</p>",
            "ApplyHtmlDisclaimerLocation": "Append",
            "ApplyHtmlDisclaimerFallbackAction": "Wrap"}),
        ("Tag external senders", {
            "FromScope": "NotInOrganization", "PrependSubject": "[EXTERNAL] "}),
    ], when)


# --- the scenarios -------------------------------------------------------------------

def _legacy_inline(state, sc, size):
    seed_unrelated(state, sc)
    seed_125_inline(state, sc)
    _dns(state, sc)


def _legacy_parallel(state, sc, size):
    seed_unrelated(state, sc)
    seed_125_parallel(state, sc)
    _dns(state, sc)


SCENARIOS: dict[str, Scenario] = {}


def _register(sc: Scenario) -> None:
    SCENARIOS[sc.name] = sc


_register(Scenario(
    "legacy-inline",
    "Pre-CBC inline tenant set up by seppmail365cloud 1.2.5.\n"
    "Tenant contoso (contoso.ch, contoso-group.ch), region ch, MX at the"
    " SEPPmail.cloud gate hosts; connectors [SEPPmail.cloud] Inbound-InLine"
    " (certificate *.ch.seppmail.cloud) and Outbound-InLine (not rule-scoped),"
    " beside a hybrid connector, a partner connector and two unrelated rules."
    " SEPPmail.cloud is prepared for CBC (readiness TXT present).",
    "contoso", "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
    ("contoso.ch", "contoso-group.ch"), "ch", "inline", _legacy_inline))

_register(Scenario(
    "legacy-parallel",
    "Pre-CBC parallel tenant set up by seppmail365cloud 1.2.5.\n"
    "Tenant fabrikam (fabrikam.com), region de, MX at Microsoft; connectors"
    " [SEPPmail.cloud] Inbound-Parallel / Outbound-Parallel (OnPremises,"
    " certificate *.de.seppmail.cloud) and the 1.2.5 rules 050, 100, 200 and"
    " 300-600 with exclusion lists, beside unrelated objects. Prepared for CBC.",
    "fabrikam", "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60",
    ("fabrikam.com",), "de", "parallel", _legacy_parallel))


def seed_09_slash(state: dict, sc: Scenario, when: datetime = SETUP_09) -> None:
    """Module 0.9.x names with ` / ` and `->` (seppmail365cloud.md §2.1).

    Parallel ("MX:M365") connectors from 0.9.5 and their un-numbered rules
    (rules before 1.0.5 had no number, §2.2) routing through the slash-named
    outbound connector, plus a disabled 0.9.6 inline inbound connector (` - `)
    left from a mode switch. Values as pre-CBC (§3.3).
    """
    domain = sc.domains[0]
    comment = _module_comment("0.9.5", when)
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365", when, Comment=comment,
        ConnectorType="OnPremises", RequireTls=True,
        RestrictDomainsToCertificate=True, SenderDomains=["smtp:*;1"],
        TlsSenderCertificateName=_tls_wildcard(sc.region)))
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail.cloud] SEPPmail -> ExO - MX:SEPPmail", when,
        Comment=_module_comment("0.9.6", when), Enabled=False,
        ConnectorType="Partner", RequireTls=True, RestrictDomainsToCertificate=True,
        SenderDomains=[f"smtp:*.{sc.region}.seppmail.cloud;1"],
        TlsSenderCertificateName=_tls_wildcard(sc.region)))
    outbound = "[SEPPmail.cloud] ExO -> SEPPmail / MX:M365"
    state["outbound_connectors"].append(exo.outbound_connector(
        state, outbound, when, Comment=comment, ConnectorType="OnPremises",
        UseMXRecord=False, SmartHosts=[f"{dashed(domain)}.mail.seppmail.cloud"],
        TlsSettings="DomainValidation", TlsDomain=_tls_wildcard(sc.region),
        IsTransportRuleScoped=True))
    rules = _rules_125_parallel(outbound, [], comment)
    renamed = []
    for name, props in rules:
        if "050" in name:
            continue
        # "[SEPPmail.cloud] - 100 Route …" was "[SEPPmail.cloud] - Route …".
        renamed.append((name.replace(name.split(" ")[2] + " ", "", 1), props))
    _add_rules(state, renamed, when)
    state["arc_config"] = exo.arc_config(state, "SEPPmail.cloud", when)


APPLIANCE_HOST_IP = "193.135.252.17"


def seed_appliance(state: dict, sc: Scenario, when: datetime = TENANT_CREATED) -> None:
    """Objects of a SEPPmail appliance integration that preceded SEPPmail.cloud.

    Their names start `[SEPPmail]`, which the module's regex `\\[SEPPmail*`
    also matches (seppmail365cloud.md §5.1); the appliance connector is
    rule-scoped and its rules route through it, so rules must go first (§9).
    A rule that merely mentions SEPPmail ("Allow SEPPmail newsletter") is the
    customer's own and must survive a cleanup.
    """
    domain = sc.domains[0]
    appliance = f"seppmail.{domain}"
    state["inbound_connectors"].append(exo.inbound_connector(
        state, "[SEPPmail] Appliance -> ExchangeOnline", when,
        ConnectorType="Partner", SenderIPAddresses=[APPLIANCE_HOST_IP],
        SenderDomains=["smtp:*;1"], RequireTls=True,
        RestrictDomainsToIPAddresses=False, TlsSenderCertificateName=appliance,
        Comment="SEPPmail appliance integration"))
    outbound = "[SEPPmail] ExchangeOnline -> Appliance"
    state["outbound_connectors"].append(exo.outbound_connector(
        state, outbound, when, ConnectorType="Partner", UseMXRecord=False,
        SmartHosts=[appliance], TlsSettings="CertificateValidation",
        IsTransportRuleScoped=True, Comment="SEPPmail appliance integration"))
    header = {"ExceptIfHeaderContainsMessageHeader": "X-SM-outgoing",
              "ExceptIfHeaderContainsWords": ["yes"]}
    _add_rules(state, [
        ("[SEPPmail] - Route incoming e-mails to appliance", {
            "FromScope": "NotInOrganization", "SentToScope": "InOrganization",
            "ExceptIfHeaderContainsMessageHeader": "X-SM-incoming",
            "ExceptIfHeaderContainsWords": ["yes"],
            "RouteMessageOutboundConnector": outbound, "State": "Disabled"}),
        ("[SEPPmail] - Route outgoing e-mails to appliance", {
            "FromScope": "InOrganization", "SentToScope": "NotInOrganization",
            **header, "RouteMessageOutboundConnector": outbound,
            "State": "Disabled"}),
        ("[SEPPmail] - Skip spam filter for appliance", {
            "SenderIpRanges": [APPLIANCE_HOST_IP], "SetSCL": -1}),
        ("Allow SEPPmail newsletter", {
            "SenderDomainIs": ["seppmail.ch"], "SetSCL": -1}),
    ], when)
    state["dns"]["records"].append(_record(appliance, "A", APPLIANCE_HOST_IP))


def seed_bulk(state: dict, sc: Scenario, size: int) -> None:
    """The bulk of a large tenant: 300 rules and 40 connector pairs per `size`,
    none of them SEPPmail's (names and values varied, shapes as §2-§4)."""
    when = TENANT_CREATED
    actions = ({"PrependSubject": "[Partner] "}, {"SetSCL": -1},
               {"SetHeaderName": "X-Dept", "SetHeaderValue": "finance"},
               {"BlindCopyTo": ["journal@" + sc.domains[0]]},
               {"ApplyHtmlDisclaimerText": "<p>Confidential</p>",
                "ApplyHtmlDisclaimerLocation": "Append",
                "ApplyHtmlDisclaimerFallbackAction": "Ignore"})
    rules = []
    for n in range(300 * size):
        supplier = f"supplier{n % 97:03d}.example"
        props = {"SenderDomainIs": [supplier]} if n % 3 else {
            "SubjectContainsWords": [f"Project {n:04d}"]}
        props.update(actions[n % len(actions)])
        if n % 11 == 0:
            props["State"] = "Disabled"
        rules.append((f"Mail flow {n:04d} - {supplier}", props))
    _add_rules(state, rules, when)
    for n in range(40 * size):
        partner = f"partner{n:03d}.example"
        state["inbound_connectors"].append(exo.inbound_connector(
            state, f"Partner {n:03d} inbound", when, SenderDomains=[
                f"smtp:{partner};1"], RestrictDomainsToCertificate=True,
            TlsSenderCertificateName=f"mail.{partner}"))
        state["outbound_connectors"].append(exo.outbound_connector(
            state, f"Partner {n:03d} outbound", when, RecipientDomains=[partner],
            TlsSettings="DomainValidation", TlsDomain=f"mail.{partner}"))


def _legacy_slash(state, sc, size):
    seed_unrelated(state, sc)
    seed_09_slash(state, sc)
    _dns(state, sc)


def _appliance_leftovers(state, sc, size):
    seed_unrelated(state, sc)
    seed_appliance(state, sc)
    seed_125_inline(state, sc)
    _dns(state, sc)


def _clean(state, sc, size):
    """Never integrated: no SEPPmail objects, org still dehydrated, no ARC."""
    seed_unrelated(state, sc)
    state["organization_config"]["IsDehydrated"] = True
    _dns(state, sc)


def _wrong_mx(state, sc, size):
    seed_unrelated(state, sc)
    seed_125_inline(state, sc)
    _dns(state, sc, mx_at_gate={d: False for d in sc.domains})


def _mixed_domains(state, sc, size):
    seed_unrelated(state, sc)
    seed_125_inline(state, sc)
    _dns(state, sc, mx_at_gate={sc.domains[1]: False},
         on_seppmail=(sc.domains[0],))


def _large(state, sc, size):
    seed_unrelated(state, sc)
    seed_bulk(state, sc, size)
    seed_125_parallel(state, sc)
    _dns(state, sc)


LOOP_PARTNER = {"name": "adatum", "domain": "adatum.ch", "domains": ["adatum.ch"],
                "initial_domain": "adatum.onmicrosoft.com",
                "tenant_id": "4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83", "region": "ch",
                "cbc": False}


def _migrated(state, sc, size):
    seed_unrelated(state, sc)
    seed_130_inline(state, sc)
    _dns(state, sc)


def _mail_loop(state, sc, size):
    seed_unrelated(state, sc)
    seed_130_inline(state, sc)
    _dns(state, sc)
    state["other_tenants"] = [dict(LOOP_PARTNER)]
    # The outbound test message goes to the partner tenant on SEPPmail.cloud.
    flows = state["traffic"]["flows"]
    flows[1]["recipient"] = f"info@{LOOP_PARTNER['domain']}"
    # Its MX is at its own SEPPmail.cloud gate: it is a SEPPmail.cloud customer.
    partner = LOOP_PARTNER["domain"]
    state["dns"]["records"].append(_mx(partner, gate_host(partner)))
    state["dns"]["records"].extend(_seppmail_hosts(partner, "ch", ("gate", "relay")))


_register(Scenario(
    "legacy-slash",
    "Connectors named by module 0.9.x, with ' / ' and '->' in their names.\n"
    "Tenant tailspin (tailspintoys.ch), region ch, parallel: '[SEPPmail.cloud]"
    " SEPPmail -> ExO / MX:M365' and 'ExO -> SEPPmail / MX:M365', un-numbered"
    " rules routing through the latter, and a disabled 0.9.6 inline leftover."
    " Exchange refuses to change or remove the slash-named ones from"
    " PowerShell; only the portal can (runbook sandbox portal).",
    "tailspin", "3b5d7f91-2c4e-4a6b-8d0f-1e3a5c7e9b2d",
    ("tailspintoys.ch",), "ch", "parallel", _legacy_slash))

_register(Scenario(
    "appliance-leftovers",
    "Appliance-era [SEPPmail] connectors and rules beside a 1.2.5 inline setup.\n"
    "Tenant woodgrove (woodgrovebank.ch), region ch: '[SEPPmail] Appliance ->"
    " ExchangeOnline', '[SEPPmail] ExchangeOnline -> Appliance' with two disabled"
    " rules routing through it and one spam bypass rule, the customer's own"
    " 'Allow SEPPmail newsletter' rule, and the InLine connectors of 1.2.5.",
    "woodgrove", "9c1e3a5b-7d9f-4b2d-8e4a-6c8e0a2b4d6f",
    ("woodgrovebank.ch",), "ch", "inline", _appliance_leftovers))

_register(Scenario(
    "clean",
    "A tenant never integrated with SEPPmail.cloud.\n"
    "Tenant litware (litware.ch), region ch, SEPPmail.cloud provisioned for"
    " parallel (mail host, CBC readiness TXT), MX at Microsoft; no SEPPmail"
    " objects, organization still dehydrated, no ARC configuration, module not"
    " installed.",
    "litware", "5f7b9d13-4e6a-4c8e-9a2c-3d5f7b9d1e4a",
    ("litware.ch",), "ch", "parallel", _clean, module=None))

_register(Scenario(
    "wrong-mx",
    "Inline declared (1.2.5 InLine connectors, gate and relay hosts), MX still"
    " at Microsoft.\n"
    "Tenant adventureworks (adventure-works.ch), region ch. Inline needs the MX"
    " at the gate host (seppmail365cloud.md §4); with CBC connectors in place,"
    " mail arriving directly is rejected by the certificate-restricted connector.",
    "adventureworks", "8a0c2e4f-6b8d-4f1a-9c3e-5d7f9b1c3e5a",
    ("adventure-works.ch",), "ch", "inline", _wrong_mx))

_register(Scenario(
    "not-prepared",
    "A 1.2.5 inline tenant whose SEPPmail.cloud side is not prepared for CBC.\n"
    "Tenant wingtip (wingtiptoys.ch), region ch: no CBC readiness TXT record, so"
    " SEPPmail.cloud still presents its shared certificate and new CBC"
    " connectors would reject its mail.",
    "wingtip", "6d8f0b2d-3a5c-4e7a-8b9d-0f2b4d6f8a1c",
    ("wingtiptoys.ch",), "ch", "inline", _legacy_inline, prepared=False))

_register(Scenario(
    "mixed-domains",
    "Inline tenant with one accepted domain that is not on SEPPmail.cloud.\n"
    "Tenant alpineski (alpineskihouse.ch on SEPPmail.cloud, alpineski-shop.ch"
    " with MX at Microsoft and no SEPPmail hosts), region ch, 1.2.5 InLine"
    " connectors. Inline requires all tenant domains to be inline"
    " (seppmail365cloud.md §10).",
    "alpineski", "1a3c5e7a-9b2d-4f6b-8c0e-2a4c6e8a0b3d",
    ("alpineskihouse.ch", "alpineski-shop.ch"), "ch", "inline", _mixed_domains))

_register(Scenario(
    "large",
    "A large parallel tenant: hundreds of unrelated rules, dozens of connectors.\n"
    "Tenant tailwind (tailwindtraders.com), region de, 1.2.5 parallel setup"
    " below 300 unrelated rules and 40 partner connector pairs (times the size"
    " factor; benchmarks build 10x).",
    "tailwind", "2b4d6f8b-0c1e-4a3c-9e5a-7b9d1f3b5c7e",
    ("tailwindtraders.com",), "de", "parallel", _large))

_register(Scenario(
    "mail-loop",
    "A migrated-looking inline tenant whose outbound mail loops.\n"
    "Tenant northwind (northwindtraders.ch), region ch, CBC connectors and"
    " inline rules 060/200 of module 1.3.0; its outbound test mail goes to"
    " adatum.ch, a tenant on SEPPmail.cloud without CBC (other_tenants), so it"
    " passes the SEPPmail connectors again and again until the hop limit.",
    "northwind", "0e2a4c6e-8f1b-4d3f-a5b7-9c1e3a5c7e9f",
    ("northwindtraders.ch",), "ch", "inline", _mail_loop, module="1.3.0"))

_register(Scenario(
    "migrated",
    "An inline tenant already on CBC, with mail flowing and no loop.\n"
    "Tenant proseware (proseware.ch), region ch, CBC connectors and inline rules"
    " 060/200 of module 1.3.0; its test mail goes to an ordinary external"
    " recipient. The default tenant of 06-diagnose-mail-loops.",
    "proseware", "5c7e9a1b-3d5f-4b7d-9f1a-3c5e7a9b1d3f",
    ("proseware.ch",), "ch", "inline", _migrated, module="1.3.0"))


# --- public API ----------------------------------------------------------------------

def names() -> list[str]:
    return list(SCENARIOS)


def describe(name: str) -> str:
    return _scenario(name).description


def declared(name: str) -> dict:
    """What the engineer declares for this tenant: the run's parameters."""
    sc = _scenario(name)
    return {"tenant": sc.tenant, "domains": list(sc.domains), "region": sc.region,
            "routing": sc.routing}


def _scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown sandbox scenario {name!r}; known: "
                       f"{', '.join(SCENARIOS)}") from None


def build(name: str, *, propagation_delay_s: float | None = None,
          module_installed: str | list[str] | None = None, size: int = 1,
          now: datetime | None = None) -> dict:
    """A fresh state for scenario `name`.

    `module_installed`: None keeps the scenario's own seppmail365cloud
    install; a version (or list of versions) replaces it; "" or [] means none.
    `size` multiplies the bulk of the `large` scenario (benchmarks use 10).
    """
    sc = _scenario(name)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    delay = DEFAULT_PROPAGATION_DELAY_S if propagation_delay_s is None \
        else float(propagation_delay_s)
    state = _base(sc, now, delay)
    sc.seed(state, sc, max(1, int(size)))
    state["gallery"] = _gallery()
    versions = _versions(sc, module_installed)
    state["installed_modules"] = installed_entries(versions)
    return state


def _versions(sc: Scenario, module_installed) -> list[str]:
    if module_installed is None:
        return [sc.module] if sc.module else []
    if isinstance(module_installed, str):
        return [module_installed] if module_installed else []
    return list(module_installed)


def _gallery() -> dict:
    """The simulated PowerShell Gallery (the module engineer's gallery)."""
    from . import gallery

    return gallery.default_gallery()
