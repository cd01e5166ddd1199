"""The setup-level functions of the simulated seppmail365cloud module.

Test-SC365ConnectionStatus and Get-SC365TenantId (§3.2, §6),
Confirm-SC365TenantDefaultDomain (§1.4), Get-SC365DeploymentInfo (§4 "detection",
§7) and New-/Remove-/Get-SC365Setup (§1.4), modelled on
seppmail365cloud.md. DNS answers come from the sandbox's DNS data
(`state["dns"]`), the same records its DNS server serves.

Modelled as they are:

- Get-SC365Setup of every version writes its result with `Out-Host -Paging`,
  so it returns nothing to the pipeline: only the warnings of the nested Get
  cmdlets reach the caller;
- 1.3.0+ Confirm-SC365TenantDefaultDomain reads `$global:tenantAcceptedDomains`,
  which only Test-SC365ConnectionStatus fills: after an import without a
  connection every domain is "not member" until a cmdlet has tested the
  connection (§6);
- Get-SC365DeploymentInfo 1.3.0 checks membership with `.Contains` on the
  domain array: case-sensitive, and a substring test when the tenant has a
  single accepted domain [I];
- 2.0.2 New-SC365Setup normalises `-routing p`/`i` on the wrong variable, so
  an abbreviated routing never equals the detected one and stops the setup [I];
- the 2.0.2 wildcard probe reads EscapedText of A records, so
  DnsWildCardActive is always False [I].
"""

from __future__ import annotations

import logging
from functools import partial

from .module_runtime import (
    Call, confirm_default_domain, connection_status, exo_loaded, implements, like,
    mail_hosts, ps_object, ps_string, region_of_address, require_connection,
    resolve, rethrown, routing_of, session, sha1_hex, tenant_id, thrown,
    write_error,
)
from .registry import CmdletError, lookup

log = logging.getLogger(__name__)

NOT_CONNECTED_DESIGNATED = ("You're not connected to Exchange Online - please connect"
                            " to the designated tenant prior to using this CmdLet")
NOT_DEPLOYED = ("SEPPmail.cloud setup not (fully) deployed. Use Cloud-Portal and fix"
                " deployment.")


# --- small functions ---------------------------------------------------------------


@implements("Test-SC365ConnectionStatus")
def test_connection_status(call: Call) -> list:
    """§6: False without a live, unexpired connection; -showDefaultDomain first
    writes the default domain. -Connect works only in an interactive session."""
    connected, output = connection_status(call, show_default=call["showDefaultDomain"])
    if not connected and call["Connect"] and call.interactive \
            and exo_loaded(call.tenant):
        # Reconnecting an expired session counts as connected; a first
        # connection does not (the module leaves $isConnected $false there).
        expired = call.tenant.connection is not None
        try:
            call.exo("Connect-ExchangeOnline", SkipLoadingFormatData=True)
        except CmdletError as error:
            raise thrown("Could not connect to Exchange Online, please retry.") \
                from error
        connected = expired
    return output + [connected]


@implements("Get-SC365TenantId")
def get_tenant_id(call: Call) -> list:
    """§3.2: the tenant GUID from the OpenID discovery document; no EXO session."""
    return [tenant_id(call, call["maildomain"])]


@implements("Confirm-SC365TenantDefaultDomain")
def confirm_tenant_default_domain(call: Call) -> list:
    """§1.4: $true default, $false accepted but not default, error otherwise."""
    return [confirm_default_domain(call, call["ValidationDomain"])]


# --- Get-SC365DeploymentInfo -------------------------------------------------------


@implements("Get-SC365DeploymentInfo")
def get_deployment_info(call: Call) -> list:
    """§4 detection and §7 fields, for 1.3.0 and 2.0.2 property names."""
    return [deployment_info(call)]


def deployment_info(call: Call) -> dict:
    require_connection(call, NOT_CONNECTED_DESIGNATED)
    two = call.profile.version.release[0] >= 2
    domain = _deployment_domain(call, two)

    hosts = {kind: f"{domain.replace('.', '-')}.{kind}.seppmail.cloud"
             for kind in ("gate", "relay", "mail")}
    found = {kind: resolve(call.state, host) for kind, host in hosts.items()}
    routing = inbound_only = None
    status = "unknown" if two else None
    if found["gate"]:
        routing, inbound_only, status = "inline", not found["relay"], True
    elif found["mail"]:
        routing, status = "parallel", True
    else:
        status = False

    mx_match, status = _mx_check(call, domain, hosts["gate"], routing, status)
    addresses = found["gate"] if routing == "inline" else found["mail"]
    kind = "Gate" if routing == "inline" else "Mail"
    region = region_of_address(call.profile, addresses, kind) if routing else None
    tid = tenant_id(call, domain)
    digest = sha1_hex(tid)
    cbc = bool(resolve(call.state, f"{digest}.cbc.seppmail.cloud", "TXT"))
    if not cbc:
        shown = "" if two else domain  # 2.0.2 prints an undefined variable
        call.warn(f"Could not find TXT Entry for TenantID {tid} of domain {shown}."
                  " Setup will most likely fail! Go to the SEPPmail.cloud-portal and"
                  " check the deployment status.")

    info = {
        "status": status, "domain": domain, "region": region, "routing": routing,
        "inbound_only": inbound_only, "cbc": cbc,
        "connector_host": (tid + call.profile.region(region)["TlsCertificate"]
                           .replace("*", "")) if region else None,
        "dns_entry": f"{digest}.cbc.seppmail.cloud" if cbc else None,
        "mx_match": mx_match if routing == "inline" else None,
        "mail": hosts["mail"] if routing == "parallel" else None,
        "gate": hosts["gate"] if routing == "inline" else None,
        "relay": hosts["relay"] if routing == "inline" and not inbound_only else None,
    }
    return _info_v2(call, info) if two else _info_v1(info)


def _deployment_domain(call: Call, two: bool) -> str:
    domains = session(call.tenant).tenant_accepted_domains or []
    names = [d["DomainName"] for d in domains]
    default = next((d["DomainName"] for d in domains if d["Default"]), "")
    given = call["SEPPmailCloudDomain"]
    if two:
        wanted = given or []
        for domain in wanted:
            if domain not in names:  # .Contains on the array: ordinal
                raise thrown(f"Domain {domain} is not member of this tenant! Check for"
                             " typos or connect to different tenant")
        return wanted[-1] if wanted else default  # §7 "the last wins" [I]
    domain = given or default
    member = (domain in names[0]) if len(names) == 1 else (domain in names)
    if domain and not member:
        raise thrown(f"Domain {domain} is not member of this tenant! Check for typos"
                     " or connect to different tenant")
    return domain


def _mx_check(call: Call, domain: str, gate: str, routing, status):
    """§4 step 3: inline needs the first MX host to be the gate host."""
    rows = _mx_report(call, domain)
    if not rows:
        return None, False
    mx = rows[0]["HighestPriorityMailhost"]
    if routing != "inline":
        return None, status
    if str(mx).lower() == gate.lower():
        return True, status
    call.warn(f"MX Record {mx} configured in M365 does not fit to SEPPmail GateHost"
              f" {gate} in DNS - Check your provisioning Status in SEPPmail.cloud"
              " Portal")
    return False, False


def _mx_report(call: Call, domain: str) -> list[dict]:
    """Get-MxRecordReport -Domain: rows for the highest-priority mail host.

    The module asks Exchange, which answers from public DNS; the sandbox's
    public DNS is `state["dns"]`. While the simulated Exchange has no
    Get-MxRecordReport, the same rows are read from that data here.
    """
    if lookup("Get-MxRecordReport") is not None:
        return call.exo("Get-MxRecordReport", Domain=domain)
    hosts = mail_hosts(call.state, domain)
    if not hosts:
        return []
    addresses = resolve(call.state, hosts[0]) or [None]
    return [{"HighestPriorityMailhost": hosts[0],
             "HighestPriorityMailhostIpAddress": address, "Domain": domain}
            for address in addresses]


def _info_v1(info: dict) -> dict:
    """1.3.0's PSCustomObject, with its own spelling of the property names."""
    return {
        "DeployMentStatus": info["status"], "SEPPmailCloudDomain": info["domain"],
        "region": info["region"], "routing": info["routing"],
        "InBoundOnly": info["inbound_only"], "CBCDeployed": info["cbc"],
        "CBCConnectorHost": info["connector_host"], "CBCDnsEntry": info["dns_entry"],
        "CBCDnsTimeStamp": None, "InlineMXMatch": info["mx_match"],
        "MailHost": info["mail"], "GateHost": info["gate"], "RelayHost": info["relay"],
    }


def _info_v2(call: Call, info: dict) -> dict:
    """2.0.2's object: the §7 fields plus the 1.3.7+ DNS checks."""
    domain = info["domain"]
    texts = resolve(call.state, domain, "TXT")
    swiss = next((t for t in texts if like(t, "swisssign-check*")), None)
    spf = next((t for t in texts if like(t, "v=spf*")), None)
    if texts and swiss is None:
        call.warn("Swisssign TXT (swissSign-check) record is missing - SC-CERT"
                  " deployment will fail!")
    if texts and spf is None:
        call.warn("SPF TXT (v=spf*) record is missing")
    cname = partial(resolve, call.state, kind="CNAME")
    return {
        "DeploymentStatus": info["status"], "SEPPmailCloudDomain": domain,
        "Region": info["region"], "Routing": info["routing"],
        "InboundOnly": info["inbound_only"], "CBCDeployed": info["cbc"],
        "CBCConnectorHost": info["connector_host"], "CBCDnsEntry": info["dns_entry"],
        "InlineMXMatch": info["mx_match"], "MailHost": info["mail"],
        "GateHost": info["gate"], "RelayHost": info["relay"],
        "SwissSignCheckTXT": swiss, "spfTXT": spf,
        "DnsSecurEmailCNAME": _first_name(cname(f"securemail.{domain}")),
        "DnsLetsEncryptCNAME": _first_name(
            cname(f"_acme-challenge.securemail.{domain}")),
        "DnsDKIMTXT": ps_string(resolve(call.state, f"default._domainkey.{domain}",
                                        "TXT")),
        "DnsWildCardActive": False,
    }


def _first_name(values: list[str]) -> str:
    """`[String]` of a CNAME's CanonicalName: the target, or '' when none."""
    return values[0].rstrip(".") if values else ""


def _field(info: dict, name: str):
    """Read a DeploymentInfo property whatever the version's spelling."""
    for key, value in info.items():
        if key.lower() == name.lower():
            return value
    return None


def _detected(call: Call, failure: str) -> dict:
    """`try { Get-SC365DeploymentInfo } catch { throw ... }` of the setup cmdlets."""
    try:
        return call.module("Get-SC365DeploymentInfo")[0]
    except CmdletError as error:
        raise thrown(failure) from error


# --- New-SC365Setup ----------------------------------------------------------------


@implements("New-SC365Setup")
def new_setup(call: Call) -> list:
    """§1.4: connectors, then rules (none inbound-only); -force removes first."""
    era = call.profile.version
    if era.release[0] >= 2:
        return _new_setup_v2(call)
    if era.prerelease:
        return _new_setup_preview(call)
    return _new_setup_v1(call)


def _default_of(call: Call, domains: list) -> str | None:
    default = None
    for domain in domains:
        if confirm_default_domain(call, domain):
            default = domain
    return default


def _stepped(call: Call, command: str, **params) -> list:
    try:
        return call.module(command, **params)
    except CmdletError as error:
        raise rethrown(error) from error


def _new_setup_preview(call: Call) -> list:
    """p2: all three parameters mandatory; the connectors use the default domain."""
    routing = routing_of(call["routing"])
    domains = call["SEPPmailCloudDomain"]
    default = _default_of(call, domains)
    output = _stepped(call, "New-SC365Connectors", SEPPmailCloudDomain=default,
                      routing=routing, region=call["region"])
    output += _stepped(call, "New-SC365Rules", SEPPmailCloudDomain=domains,
                       routing=routing)
    return output


def _new_setup_v1(call: Call) -> list:
    """1.3.0: DeploymentInfo fills what is missing; -force runs Remove-SC365Setup."""
    require_connection(call)
    domain, routing, region = (call["SEPPmailCloudDomain"], call["routing"],
                               call["region"])
    inbound_only = bool(call["InBoundOnly"])
    if not domain or not region or not routing:
        info = _detected(call, "Could not autodetect SEPPmail.cloud Deployment Status,"
                               " use manual parameters")
        domain, routing, region, inbound_only = _from_info(call, info, v2=False)
    else:
        _default_of(call, [domain])
    return _build(call, [domain], domain, routing, region, inbound_only)


def _new_setup_v2(call: Call) -> list:
    """2.0.2: DeploymentInfo always; given values must fit it (§1.4)."""
    require_connection(call)
    domains = call["SEPPmailCloudDomain"] or []
    if any(like(d, "*.onmicrosoft.com") for d in domains):
        raise write_error(call.command, f"Domain {ps_string(domains)} is not intended"
                          " for E-Mail sending and cannot be booked for the"
                          " SEPPmail-cloud Service. Specify a custom domain of your"
                          " tenant and retry.")
    info = _detected(call, "Could not autodetect SEPPmail.cloud deployment status,"
                           " check SEPPmail.cloud portal deployment status")
    routing, region = call["routing"], call["region"]
    inbound_only = bool(call["InBoundOnly"])
    default = None
    if not domains or not region or not routing:
        detected = _field(info, "SEPPmailCloudDomain")
        if like(detected, "*.onmicrosoft.com"):
            raise write_error(call.command, _onmicrosoft_default(detected))
        domain, routing, region, inbound_only = _from_info(call, info, v2=True)
        domains = [domain]
    else:
        _fits(call, info, domains, routing, region)
        default = _default_of(call, domains)
    connector_domain = domains[0] if len(domains) <= 1 else default
    return _build(call, domains, connector_domain, routing, region, inbound_only)


def _onmicrosoft_default(domain: str) -> str:
    return (f"Domain {domain} is set as the tenant default accepted domain. {domain}"
            " is not intended for E-Mail sending and cannot be booked for the"
            " SEPPmail-cloud Service. Specify a custom domain of your tenant and"
            " retry or change the Default accepted domain in your Exchange Online"
            " tenant.")


def _from_info(call: Call, info: dict, *, v2: bool):
    """Routing, region, domain and inbound-only from DeploymentInfo (§1.4)."""
    if _field(info, "DeploymentStatus") is False:
        # 2.0.2 writes "$deploymentInfo.SEPPmailCloudDomain" without $( ), so the
        # whole object prints, followed by the literal property name.
        raise write_error(call.command, (
            f"SEPPmail.cloud setup for domain {ps_object(info)}.SEPPmailCloudDomain is"
            " not (fully) deployed. Use Cloud-Portal and fix deployment.")
            if v2 else NOT_DEPLOYED)
    routing = _routing_from(call, info, v2)
    region = _field(info, "Region")
    if not region:
        raise write_error(call.command, "Could not autodetect region. Use manual"
                          " parameters")
    domain = _field(info, "SEPPmailCloudDomain")
    if not domain:
        raise write_error(call.command, "Could not autodetect SEPPmailCloudDomain."
                          " Use manual parameters")
    return domain, routing, region, _field(info, "InboundOnly") is True


def _routing_from(call: Call, info: dict, v2: bool) -> str:
    routing = _field(info, "Routing")
    if not routing:
        raise write_error(call.command, "Cloud not autodetect routing info, use manual"
                          " parameters" if v2 else "Cloud not autodetect routig info,"
                          " use manual parameters")
    return routing


def _fits(call: Call, info: dict, domains: list, routing: str, region: str) -> None:
    """2.0.2: a domain mismatch warns; routing or region mismatch stops."""
    detected = _field(info, "SEPPmailCloudDomain") or ""
    if any(d.lower() != detected.lower() for d in domains):
        call.warn(f"Domain \"{ps_string(domains)}\" does not fit to collected"
                  f" deployment info, just detected domain \"{detected}\"")
    found_routing = _field(info, "Routing") or ""
    if routing.lower() != found_routing.lower():
        raise write_error(call.command, f"Routing mode \"{routing}\" does not fit to"
                          " deployment info, just detected routing mode"
                          f" \"{found_routing}\" STOPPING because deployment will FAIL")
    found_region = _field(info, "Region") or ""
    if region.lower() != found_region.lower():
        raise write_error(call.command, f"Region \"{region}\" does not fit to"
                          " deployment info, just detected region"
                          f" \"{found_region}\" STOPPING because deployment will"
                          " FAIL")


def _build(call: Call, domains: list, connector_domain, routing, region,
           inbound_only: bool) -> list:
    """The process block shared by 1.3.0 and 2.0.2."""
    output = []
    if call["force"]:
        output += _stepped(call, "Remove-SC365Setup")
    connectors = {"SEPPmailCloudDomain": connector_domain, "routing": routing,
                  "region": region}
    if inbound_only:
        connectors["inBoundOnly"] = True
    output += _stepped(call, "New-SC365Connectors", **connectors)
    if not inbound_only:
        output += _stepped(call, "New-SC365Rules", SEPPmailCloudDomain=domains,
                           routing=routing)
    return output


# --- Remove-SC365Setup -------------------------------------------------------------


@implements("Remove-SC365Setup")
def remove_setup(call: Call) -> list:
    """§1.4: rules, then connectors; DeploymentInfo routing wins unless both
    -routing and -InBoundOnly are given."""
    if call.profile.version.prerelease:
        routing = routing_of(call["routing"])
        _stepped(call, "Remove-SC365Rules", routing=routing)
        _stepped(call, "Remove-SC365Connectors", routing=routing)
        return []
    two = call.profile.version.release[0] >= 2
    if two:
        require_connection(call)
    routing, inbound_only = call["routing"], bool(call["InBoundOnly"])
    if not inbound_only or not routing:
        info = _detected(call, "Could not autodetect SEPPmail.cloud Deployment Status,"
                               " use manual parameters")
        if _field(info, "DeploymentStatus") is False:
            raise write_error(call.command, NOT_DEPLOYED)
        routing = _routing_from(call, info, two)
        inbound_only = _field(info, "InboundOnly") is True
    if not inbound_only:
        rules = {} if two else {"routing": routing}
        _stepped(call, "Remove-SC365Rules", **rules)
    _stepped(call, "Remove-SC365Connectors", routing=routing, inBoundOnly=inbound_only)
    return []


# --- Get-SC365Setup ----------------------------------------------------------------


@implements("Get-SC365Setup")
def get_setup(call: Call) -> list:
    """§1.4: runs the Get cmdlets, then `Out-Host -Paging`: nothing is returned."""
    if call.profile.version.prerelease:
        routing = routing_of(call["routing"])
        call.module("Get-SC365Connectors", routing=routing)
        call.module("Get-SC365Rules", routing=routing)
        return []
    two = call.profile.version.release[0] >= 2
    require_connection(call)
    routing = call.params.get("routing")
    inbound_only = bool(call.params.get("InBoundOnly"))
    if two or not inbound_only or not routing:
        info = _detected(call, "Could not autodetect SEPPmail.cloud Deployment Status,"
                               " use manual parameters")
        if _field(info, "DeploymentStatus") is False:
            raise write_error(call.command, NOT_DEPLOYED)
        routing = _routing_from(call, info, two)
        inbound_only = _field(info, "InboundOnly") is True
    try:
        call.module("Get-SC365Connectors", routing=routing, inBoundOnly=inbound_only)
        if not inbound_only:
            call.module("Get-SC365Rules", **({} if two else {"routing": routing}))
    except CmdletError:
        if not two:
            raise
        call.warn("Found no or incomplete setup, please check manually in EAC.")
    return []
