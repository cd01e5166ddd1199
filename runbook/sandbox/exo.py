"""The Exchange Online cmdlets of the sandbox tenant.

Every behaviour here is modelled on /work/shared/domain/exchange-objects.md
(cited as §N in each docstring): object shapes with the fields Exchange
assigns (§1-§6), defaults on New, identities matched case-insensitively by
Name, Guid or DN, the error records of §9, rule priorities, and the guards
that tie rules to the connectors they route through. The sandbox is the
runbook's test partner: where Exchange refuses something, so does this.

The object builders (`inbound_connector`, `transport_rule`, ...) are shared
with the scenario builders, so seeded objects and created ones have one
shape. Where a fact is inferred rather than recorded it says [I].
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import logging
import os
import re
from datetime import datetime, timedelta

from .registry import CmdletError, cmdlet
from .state import iso, new_guid
from .tenant import bind_parameters

log = logging.getLogger(__name__)

# exchange-objects.md §1: the directory partition and a DC of the EU forest
# that tenants in the examples live in. One fixed forest for every sandbox
# tenant: the runbook must not depend on which one it is.
FOREST = "EURPR09A001.PROD.OUTLOOK.COM"
FOREST_DN = "DC=EURPR09A001,DC=PROD,DC=OUTLOOK,DC=COM"
DOMAIN_CONTROLLER = "AM0PR09A01DC001.EURPR09A001.PROD.OUTLOOK.COM"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"

INBOUND_DEFAULTS = {
    # exchange-objects.md §2, in Get order, with the defaults on New.
    "Enabled": True, "ConnectorType": "Partner", "ConnectorSource": "Default",
    "Comment": "", "SenderIPAddresses": [], "SenderDomains": [],
    "TrustedOrganizations": [], "ClientHostNames": [],
    "AssociatedAcceptedDomains": [], "RequireTls": True,
    "RestrictDomainsToIPAddresses": False, "RestrictDomainsToCertificate": False,
    "CloudServicesMailEnabled": False, "TreatMessagesAsInternal": False,
    "TlsSenderCertificateName": None, "EFTestMode": False,
    "ScanAndDropRecipients": [], "EFSkipLastIP": False, "EFSkipIPs": [],
    "EFSkipMailGateway": [], "EFUsers": [],
}

OUTBOUND_DEFAULTS = {
    # exchange-objects.md §3, in Get order, with the defaults on New.
    "Enabled": True, "UseMXRecord": True, "Comment": "", "ConnectorType": "Partner",
    "ConnectorSource": "Default", "RecipientDomains": [], "SmartHosts": [],
    "TlsDomain": None, "TlsSettings": None, "IsTransportRuleScoped": False,
    "RouteAllMessagesViaOnPremises": False, "CloudServicesMailEnabled": False,
    "AllAcceptedDomains": False, "SenderRewritingEnabled": False,
    "MtaStsMode": "Opportunistic", "SmtpDaneMode": "Opportunistic",
    "TestMode": False, "LinkForModifiedConnector": ZERO_GUID,
    "ValidationRecipients": [], "IsValidated": False,
    "LastValidationTimestamp": None,
}


def initial_domain(state: dict) -> str:
    return state["tenant"]["initial_domain"]


def organization_dn(state: dict) -> str:
    return f"CN={initial_domain(state)},CN=ConfigurationUnits,{FOREST_DN}"


def transport_dn(state: dict) -> str:
    return f"CN=Transport Settings,CN=Configuration,{organization_dn(state)}"


def organization_id(state: dict) -> str:
    """exchange-objects.md §1 OrganizationId: hosted organisation - config unit."""
    org = initial_domain(state)
    return (f"{FOREST}/Microsoft Exchange Hosted Organizations/{org} - "
            f"{FOREST}/ConfigurationUnits/{org}/Configuration")


def _directory_fields(state: dict, name: str, dn: str, guid: str, when: datetime,
                      object_class: str, *, exchange_version: str,
                      created: bool = True) -> dict:
    """The fields Exchange assigns to every directory object (§1)."""
    stamp = iso(when)
    fields = {
        "AdminDisplayName": "", "ExchangeVersion": exchange_version,
        "Name": name, "DistinguishedName": dn, "Identity": name,
        "ObjectCategory": f"{FOREST}/Configuration/Schema/ms-Exch-{object_class}",
        "ObjectClass": ["top", "msExch" + object_class.replace("-", "")],
        "WhenChanged": stamp,
    }
    if created:
        fields.update(WhenCreated=stamp, WhenChangedUTC=stamp, WhenCreatedUTC=stamp)
    fields.update({
        "ExchangeObjectId": guid, "OrganizationalUnitRoot": initial_domain(state),
        "OrganizationId": organization_id(state), "Id": name, "Guid": guid,
        "OriginatingServer": DOMAIN_CONTROLLER, "IsValid": True,
        "ObjectState": "Unchanged", "DirectoryObjectVersion": 1,
    })
    return fields


def rename(obj: dict, new_name: str, container_dn: str) -> None:
    """Apply a new Name: Identity, Id and the DN follow it (§1)."""
    obj["Name"] = obj["Identity"] = obj["Id"] = new_name
    obj["DistinguishedName"] = f"CN={new_name},{container_dn}"
    if "NameHashGuid" in obj:
        obj["NameHashGuid"] = name_hash_guid(new_name)


def touch(obj: dict, when: datetime) -> None:
    """Stamp a change: WhenChanged (and WhenChangedUTC where it exists)."""
    obj["WhenChanged"] = iso(when)
    if "WhenChangedUTC" in obj:
        obj["WhenChangedUTC"] = iso(when)
    obj["DirectoryObjectVersion"] = obj.get("DirectoryObjectVersion", 1) + 1


def name_hash_guid(name: str) -> str:
    digest = hashlib.md5(name.lower().encode("utf-8")).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def inbound_connector(state: dict, name: str, when: datetime, *,
                      guid: str | None = None, **props) -> dict:
    """A full InboundConnector (§2 fields, then §1; NameHashGuid inbound only)."""
    guid = guid or new_guid(f"{state['tenant']['tenant_id']}:inbound:{name}")
    obj = {k: _copy(v) for k, v in INBOUND_DEFAULTS.items()}
    obj.update(props)
    obj.update(_directory_fields(
        state, name, f"CN={name},{transport_dn(state)}", guid, when,
        "SMTP-Inbound-Connector", exchange_version="0.1 (8.0.535.0)"))
    obj["NameHashGuid"] = name_hash_guid(name)
    obj["OrganizationalUnitRootInternal"] = initial_domain(state)
    return obj


def outbound_connector(state: dict, name: str, when: datetime, *,
                       guid: str | None = None, **props) -> dict:
    """A full OutboundConnector (§3 fields, then §1)."""
    guid = guid or new_guid(f"{state['tenant']['tenant_id']}:outbound:{name}")
    obj = {k: _copy(v) for k, v in OUTBOUND_DEFAULTS.items()}
    obj.update(props)
    if obj["UseMXRecord"]:
        obj["SmartHosts"] = []  # §3: the server clears SmartHosts with MX routing
    obj.update(_directory_fields(
        state, name, f"CN={name},{transport_dn(state)}", guid, when,
        "SMTP-Outbound-Connector", exchange_version="0.1 (8.0.535.0)"))
    return obj


def rules_dn(state: dict) -> str:
    return f"CN=TransportVersioned,CN=Rules,{transport_dn(state)}"


def rule_tail(state: dict, name: str, guid: str, when: datetime) -> dict:
    """§4 tail: Identity … ObjectState; rules have WhenChanged only (§1)."""
    return {
        "Identity": name, "DistinguishedName": f"CN={name},{rules_dn(state)}",
        "Guid": guid, "ImmutableId": guid, "OrganizationId": organization_id(state),
        "Name": name, "IsValid": True, "WhenChanged": iso(when),
        "ExchangeVersion": "0.1 (8.0.535.0)", "ObjectState": "Unchanged",
    }


def accepted_domain(state: dict, domain: str, when: datetime, *,
                    default: bool = False, initial: bool = False,
                    domain_type: str = "Authoritative") -> dict:
    """An AcceptedDomain (§5): Name = Identity = DomainName."""
    guid = new_guid(f"{state['tenant']['tenant_id']}:domain:{domain}")
    obj = {
        "DomainName": domain, "CatchAllRecipientID": None, "DomainType": domain_type,
        "MatchSubDomains": False, "AddressBookEnabled": True, "Default": default,
        "EmailOnly": False, "ExternallyManaged": False,
        "RawAuthenticationType": "Managed", "AuthenticationType": "Managed",
        "LiveIdInstanceType": "Business", "PendingRemoval": False,
        "PendingCompletion": False, "FederatedOrganizationLink": "Federation",
        "MailFlowPartner": None, "OutboundOnly": False, "IsCoexistenceDomain": False,
        "PerimeterDuplicateDetected": False, "IsDefaultFederatedDomain": False,
        "EnableNego2Authentication": False, "CanHaveCloudCache": False,
        "SendingFromDomainDisabled": False, "SendingToDomainDisabled": False,
        "SmtpDaneStatus": "Disabled", "MailFlowRegion": "",
        "AzureProvisioningRegion": "", "MoeraDnsProvisioningMode": "Default",
        "InitialDomain": initial,
    }
    obj.update(_directory_fields(
        state, domain, f"CN={domain},CN=Accepted Domains,{transport_dn(state)}",
        guid, when, "Accepted-Domain", exchange_version="0.20 (15.0.0.0)"))
    return obj


def organization_config(state: dict, when: datetime, *, dehydrated: bool) -> dict:
    """Get-OrganizationConfig (§6): starts OrganizationId, Name, Identity, Guid."""
    org = initial_domain(state)
    guid = new_guid(f"{state['tenant']['tenant_id']}:organization")
    return {
        "OrganizationId": organization_id(state), "Name": org, "Identity": org,
        "Guid": guid, "ObjectVersion": new_guid(f"{guid}:version"),
        "DisplayName": state["tenant"]["name"].capitalize(),
        "IsDehydrated": dehydrated, "DefaultDomain": state["tenant"]["default_domain"],
        "ExchangeVersion": "0.20 (15.0.0.0)", "WhenCreatedUTC": iso(when),
        "WhenChangedUTC": iso(when), "IsValid": True, "ObjectState": "Unchanged",
    }


def connection_filter_policy(state: dict, when: datetime) -> dict:
    """The Default HostedConnectionFilterPolicy (§6 live default)."""
    return {
        "AdminDisplayName": "", "IsDefault": True, "IPAllowList": [],
        "IPBlockList": [], "EnableSafeList": False,
        "DirectoryBasedEdgeBlockMode": "Default", "Identity": "Default",
        "Id": "Default", "Name": "Default",
        "DistinguishedName": f"CN=Default,CN=Hosted Connection Filter,"
                             f"{transport_dn(state)}",
        "Guid": new_guid(f"{state['tenant']['tenant_id']}:hcfp"),
        "OrganizationId": organization_id(state), "WhenChanged": iso(when),
        "WhenChangedUTC": iso(when), "WhenCreatedUTC": iso(when),
        "ExchangeVersion": "0.20 (15.0.0.0)", "IsValid": True,
        "ObjectState": "Unchanged",
    }


def content_filter_policy(state: dict, when: datetime) -> dict:
    """The Default HostedContentFilterPolicy: the fields the module reads (§9).

    seppmail365cloud.md §1.4/§9: AllowedSenders and MarkAsSpamSpfRecordHardFail
    (values Off/On/Test).
    """
    return {
        "Identity": "Default", "Id": "Default", "Name": "Default",
        "IsDefault": True, "AdminDisplayName": "", "AllowedSenders": [],
        "AllowedSenderDomains": [], "BlockedSenders": [], "BlockedSenderDomains": [],
        "MarkAsSpamSpfRecordHardFail": "Off", "SpamAction": "MoveToJmf",
        "HighConfidenceSpamAction": "MoveToJmf", "BulkThreshold": 7,
        "DistinguishedName": f"CN=Default,CN=Hosted Content Filter,"
                             f"{transport_dn(state)}",
        "Guid": new_guid(f"{state['tenant']['tenant_id']}:hcfpol"),
        "OrganizationId": organization_id(state), "WhenChanged": iso(when),
        "WhenChangedUTC": iso(when), "WhenCreatedUTC": iso(when),
        "ExchangeVersion": "0.20 (15.0.0.0)", "IsValid": True,
        "ObjectState": "Unchanged",
    }


def arc_config(state: dict, sealers: str, when: datetime) -> dict:
    """Get-ArcConfig's object (§6): ArcTrustedSealers as one comma-joined string."""
    return {
        "ArcTrustedSealers": sealers, "Identity": "Default", "Id": "Default",
        "Name": "Default", "OrganizationId": organization_id(state),
        "WhenChangedUTC": iso(when), "IsValid": True, "ObjectState": "Unchanged",
    }


def _copy(value):
    return list(value) if isinstance(value, list) else value


# --- errors ----------------------------------------------------------------

def exo_error(exception: str, text: str, *, category: str = "NotSpecified",
              error_id: str | None = None, target: str | None = None,
              code: str | None = None) -> CmdletError:
    """A server-side error as EXO V3 hands it over (§9).

    V3 turns a REST error into `System.Exception` whose message is
    `ExNNNNNN|<exception type>|<text>`. The code for not-found (Ex6F9304) is
    the recorded one; other codes are derived from the type name [I].
    """
    code = code or "Ex" + hashlib.sha1(exception.encode()).hexdigest()[:6].upper()
    return CmdletError(f"{code}|{exception}|{text}", category=category,
                       error_id=error_id or exception.rsplit(".", 1)[-1],
                       target=target)


def not_found(identity: str) -> CmdletError:
    """§9 "Missing identity": ManagementObjectNotFoundException, NotSpecified."""
    return exo_error(
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}'"
        f" couldn't be found on '{DOMAIN_CONTROLLER}'.",
        code="Ex6F9304", target=identity)


def _invalid(text: str, target: str | None = None) -> CmdletError:
    return exo_error("Microsoft.Exchange.Data.DataValidationException", text,
                     target=target)


def _argument(text: str, target: str | None = None) -> CmdletError:
    return exo_error("System.ArgumentException", text, category="InvalidArgument",
                     error_id="ArgumentException", target=target)


# --- registration -----------------------------------------------------------

def exo_cmdlet(name: str, spec: dict[str, str], *, required=(),
               should_process: bool = False, needs_connection: bool = True):
    """Register an Exchange Online cmdlet with its parameters.

    The connection check comes first, as in PowerShell: a command that is not
    loaded fails before any parameter is looked at.
    """

    def wrap(fn):
        def run(tenant, params):
            if needs_connection:
                tenant.require_connected(name)
            bound = bind_parameters(name, params or {}, spec, required=required,
                                    should_process=should_process)
            if bound.pop("WhatIf", False):
                # -WhatIf: the cmdlet reports what it would do and changes nothing.
                return []
            bound.pop("Confirm", None)
            return fn(tenant, bound)

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        run.spec = spec  # type: ignore[attr-defined]
        run.should_process = should_process  # type: ignore[attr-defined]
        return cmdlet(name)(run)

    return wrap


def _out(*objects: dict) -> list[dict]:
    """The output objects as the tenant holds them.

    No copy here: the server serialises a reply before it reads the next
    request, and `Tenant.invoke` hands in-process callers (the simulated
    module) copies, so nobody can edit the tenant through a result.
    """
    return list(objects)


def _result_size(value) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() == "unlimited"):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise _argument(f"Cannot convert value '{value}' to ResultSize.") from None
    if size < 1:
        raise _argument("ResultSize must be 'Unlimited' or a positive number.")
    return size


def _limit(objects: list, size, tenant, command: str) -> list:
    limit = _result_size(size)
    if limit is None or len(objects) <= limit:
        return objects
    tenant.warn(f"By default, only the first {limit} items are returned. Use the"
                " ResultSize parameter to specify the number of items returned."
                " To return all items, specify \"-ResultSize Unlimited\".")
    return objects[:limit]


# --- identities -------------------------------------------------------------

def _wildcard(pattern: str) -> re.Pattern:
    """`*` is the only wildcard; `[` and `]` are literal (seppmail365cloud.md §5.1
    `'[SEPPmail*'` must match names that start with `[SEPPmail`)."""
    parts = [re.escape(p) for p in pattern.split("*")]
    return re.compile("(?is)" + ".*".join(parts))


def identifies(obj: dict, identity: str) -> bool:
    """§9 "How identities match": Name, Guid or DN, case-insensitively."""
    wanted = identity.strip().lower()
    return any(str(obj.get(key) or "").lower() == wanted
               for key in ("Name", "Guid", "DistinguishedName", "ExchangeObjectId"))


def select(objects: list[dict], identity: str | None) -> list[dict]:
    """Get-* semantics: no identity = all; `*` filters names; else exact match."""
    if identity is None or identity == "":
        return list(objects)
    if "*" in identity:
        pattern = _wildcard(identity.strip())
        found = [o for o in objects if pattern.fullmatch(o["Name"])]
    else:
        found = [o for o in objects if identifies(o, identity)]
    if not found:
        raise not_found(identity)
    return found


def find_one(objects: list[dict], identity: str) -> dict:
    """Set/Remove semantics: the identity is literal and names one object."""
    for obj in objects:
        if identifies(obj, identity):
            return obj
    raise not_found(identity)


def has_slash(name: str) -> bool:
    return "/" in name or "\\" in name


def _refuse_slash_name(obj: dict) -> None:
    """Connectors named with `/` or `\\` cannot be changed from PowerShell.

    seppmail365cloud.md §5.1 and §10 step 4: EXO no longer accepts such names;
    they are renamed and deleted in the admin portal. The error form is [I].
    """
    if has_slash(obj["Name"]):
        raise exo_error(
            "Microsoft.Exchange.Management.Tasks.InvalidConnectorNameException",
            f"The connector '{obj['Name']}' can't be changed or removed with"
            " PowerShell because its name contains '/' or '\\'. Rename or delete"
            " it in the Exchange admin center.",
            category="InvalidOperation", error_id="InvalidConnectorNameException",
            target=obj["Name"])


def check_name(name: str, *, connector: bool) -> None:
    """§9 "Names": at most 64 characters, no leading/trailing whitespace."""
    if name is None or not name.strip():
        raise _invalid("The Name property can't be empty.", target=name)
    if name != name.strip():
        raise _invalid(f"The name '{name}' can't start or end with whitespace.",
                       target=name)
    if len(name) > 64:
        raise _invalid(
            "Property: Name; The length of the property is too long. The maximum"
            f" length is 64 and the length of the value provided is {len(name)}.",
            target=name)
    if connector and has_slash(name):
        raise _invalid(f"The connector name '{name}' can't contain '/' or '\\'.",
                       target=name)


def _check_unique(objects: list[dict], name: str, kind: str,
                  ignore: dict | None = None) -> None:
    for obj in objects:
        if obj is not ignore and obj["Name"].lower() == name.lower():
            raise exception_for(kind, name)


def exception_for(kind: str, name: str) -> CmdletError:
    """§9 "Duplicate names": the three AlreadyExists errors."""
    if kind == "rule":
        return exo_error(
            "System.ArgumentException",
            f"A transport rule with the name '{name}' already exists.",
            category="InvalidArgument", error_id="RuleNameAlreadyExist", target=name)
    direction = "Inbound" if kind == "inbound" else "Outbound"
    return exo_error(
        f"Microsoft.Exchange.Management.Tasks.Error{direction}"
        "ConnectorAlreadyExistsException",
        f"The {direction.lower()} connector '{name}' already exists.",
        category="InvalidOperation",
        error_id=f"Error{direction}ConnectorAlreadyExistsException", target=name)


# --- values -----------------------------------------------------------------

# Domains in their ASCII form: an IDN is given as punycode [I].
_DOMAIN = re.compile(
    r"(?i)(\*|(\*\.)?[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9-]{1,63})*)")


def _domain_value(value: str, what: str) -> str:
    text = (value or "").strip()
    if not _DOMAIN.fullmatch(text) or ".." in text:
        raise _invalid(f"'{value}' isn't a valid domain for {what}.", target=value)
    return text


def sender_domain(value: str) -> str:
    """§2: SenderDomains are stored `smtp:<domain>;<cost>`; plain input is wrapped
    with cost 1 (§10; whether raw `smtp:x;1` input is accepted is [I])."""
    match = re.fullmatch(r"(?i)\s*smtp:(.+?)(?:;(\d+))?\s*", value or "")
    domain, cost = (match.group(1), match.group(2) or "1") if match else (value, "1")
    return f"smtp:{_domain_value(domain, 'SenderDomains')};{cost}"


def sender_ip(value: str) -> str:
    """§9 inbound checks: IPv4 only, single or CIDR ≥ /24, public addresses."""
    text = (value or "").strip()
    if "-" in text:
        raise _invalid(f"SenderIPAddresses doesn't accept the range '{text}'; use"
                       " single addresses or CIDR /24 to /32.", target=text)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _invalid(f"'{text}' isn't a valid IP address.", target=text) from None
    if net.version != 4:
        raise _invalid(f"SenderIPAddresses accepts IPv4 only; '{text}' is IPv6.",
                       target=text)
    if net.prefixlen < 24:
        raise _invalid(f"The CIDR range '{text}' is too large; the smallest prefix"
                       " allowed is /24.", target=text)
    if not net.is_global:
        raise _invalid(f"'{text}' is a private or reserved address range and can't"
                       " be used in SenderIPAddresses.", target=text)
    return text


def _skip_ip(value: str) -> str:
    """EFSkipIPs takes IPv4 and IPv6 addresses and ranges (§2 notes)."""
    text = (value or "").strip()
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _invalid(f"'{text}' isn't a valid IP address or range.",
                       target=text) from None
    return text


def smart_host(value: str) -> str:
    """§9 outbound checks: an IP smart host must be public IPv4."""
    text = (value or "").strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return _domain_value(text, "SmartHosts")
    if address.version != 4 or not address.is_global:
        raise _invalid(f"The smart host '{text}' must be a public IPv4 address or a"
                       " host name.", target=text)
    return bare


def edit_list(current: list, value, normalise) -> list:
    """Apply a whole list or an @{Add=…; Remove=…} edit (case-insensitive)."""
    if value is None:
        return []
    if isinstance(value, dict):
        result = list(current)
        for item in map(normalise, value["Add"]):
            if item.lower() not in {r.lower() for r in result}:
                result.append(item)
        removed = {normalise(i).lower() for i in value["Remove"]}
        return [r for r in result if r.lower() not in removed]
    result: list = []
    for item in map(normalise, value):
        if item.lower() not in {r.lower() for r in result}:
            result.append(item)
    return result


# --- connectors ---------------------------------------------------------------

_CONNECTOR_TYPE = "enum:Partner|OnPremises"
_CONNECTOR_SOURCE = "enum:Default|HybridWizard|Migrated"

INBOUND_PARAMETERS = {
    "Enabled": "bool", "ConnectorType": _CONNECTOR_TYPE,
    "ConnectorSource": _CONNECTOR_SOURCE, "Comment": "string",
    "SenderIPAddresses": "strings", "SenderDomains": "strings",
    "TrustedOrganizations": "strings", "ClientHostNames": "strings",
    "AssociatedAcceptedDomains": "strings", "RequireTls": "bool",
    "RestrictDomainsToIPAddresses": "bool", "RestrictDomainsToCertificate": "bool",
    "CloudServicesMailEnabled": "bool", "TreatMessagesAsInternal": "bool",
    "TlsSenderCertificateName": "string", "EFTestMode": "bool",
    "ScanAndDropRecipients": "strings", "EFSkipLastIP": "bool",
    "EFSkipIPs": "strings", "EFSkipMailGateway": "strings", "EFUsers": "strings",
}
OUTBOUND_PARAMETERS = {
    "Enabled": "bool", "UseMXRecord": "bool", "Comment": "string",
    "ConnectorType": _CONNECTOR_TYPE, "ConnectorSource": _CONNECTOR_SOURCE,
    "RecipientDomains": "strings", "SmartHosts": "strings", "TlsDomain": "string",
    "TlsSettings": "enum:EncryptionOnly|CertificateValidation|DomainValidation",
    "IsTransportRuleScoped": "bool", "RouteAllMessagesViaOnPremises": "bool",
    "CloudServicesMailEnabled": "bool", "AllAcceptedDomains": "bool",
    "SenderRewritingEnabled": "bool", "MtaStsMode": "enum:Opportunistic|None",
    "SmtpDaneMode": "enum:Opportunistic|None|Mandatory", "TestMode": "bool",
}
# §10: these three are Set-OutboundConnector only.
OUTBOUND_SET_ONLY = {"ValidationRecipients": "strings", "IsValidated": "bool",
                     "LastValidationTimestamp": "datetime"}

_INBOUND_LISTS = {
    "SenderIPAddresses": sender_ip, "SenderDomains": sender_domain,
    "EFSkipIPs": _skip_ip,
    "AssociatedAcceptedDomains":
        lambda v: _domain_value(v, "AssociatedAcceptedDomains"),
}
_OUTBOUND_LISTS = {
    "SmartHosts": smart_host,
    "RecipientDomains": lambda v: _domain_value(v, "RecipientDomains"),
}


def _as_set_spec(spec: dict) -> dict:
    """Set-* takes multi-valued properties as lists or Add/Remove hashtables."""
    return {k: ("multi" if v == "strings" else v) for k, v in spec.items()}


def _apply(obj: dict, bound: dict, lists: dict) -> None:
    for key, value in bound.items():
        if key in ("Identity", "Name"):
            continue
        if key in lists or isinstance(obj.get(key), list):
            normalise = lists.get(key, lambda v: (v or "").strip())
            obj[key] = edit_list(obj.get(key) or [], value, normalise)
        elif isinstance(value, datetime):
            obj[key] = iso(value)
        else:
            obj[key] = value


def _commit(tenant, command: str, kind: str, before, after, target: str) -> None:
    tenant.record_change(command, target, kind=kind,
                         before=copy.deepcopy(before), after=copy.deepcopy(after))


def _check_inbound(tenant, obj: dict) -> None:
    """§9 "Inbound connector checks" on the connector as it would be saved."""
    cert = obj.get("TlsSenderCertificateName")
    if cert is not None and cert.strip() == "*":
        raise _invalid("TlsSenderCertificateName can't be '*'.", target=obj["Name"])
    if not obj["SenderDomains"]:
        raise _invalid("SenderDomains can't be empty.", target=obj["Name"])
    if obj["TreatMessagesAsInternal"] and (
            obj["ConnectorType"] != "OnPremises" or obj["CloudServicesMailEnabled"]):
        raise _invalid("TreatMessagesAsInternal can be $true only on an OnPremises"
                       " connector with CloudServicesMailEnabled $false.",
                       target=obj["Name"])
    accepted = {d["DomainName"].lower() for d in tenant.state["accepted_domains"]}
    for domain in obj["AssociatedAcceptedDomains"]:
        if domain.lower() not in accepted:
            raise _invalid(f"'{domain}' isn't an accepted domain of this"
                           " organization.", target=domain)


def _warn_overlap(tenant, obj: dict) -> None:
    """§9: an IP overlap with another enabled inbound connector only warns."""
    mine = [ipaddress.ip_network(a, strict=False) for a in obj["SenderIPAddresses"]]
    if not mine or not obj["Enabled"]:
        return
    for other in tenant.state["inbound_connectors"]:
        if other["Guid"] == obj["Guid"] or not other["Enabled"]:
            continue
        theirs = [ipaddress.ip_network(a, strict=False)
                  for a in other["SenderIPAddresses"]]
        if any(a.overlaps(b) for a in mine for b in theirs):
            tenant.warn(f"The IP addresses of connector '{obj['Name']}' overlap with"
                        f" those of connector '{other['Name']}'. Mail from the"
                        " shared addresses may be attributed to either connector.")


def _check_outbound(tenant, obj: dict, bound: dict, previous: dict | None) -> None:
    """§9 "Outbound connector checks" on the connector as it would be saved.

    `previous` is the connector before a Set (None on New): UseMXRecord $false
    needs SmartHosts in the same call when it is switched off.
    """
    name = obj["Name"]
    if obj["ConnectorType"] == "OnPremises" and obj["UseMXRecord"]:
        raise _invalid("An OnPremises outbound connector can't use MX records;"
                       " set UseMXRecord to $false and give SmartHosts.", target=name)
    if obj["UseMXRecord"]:
        obj["SmartHosts"] = []  # §3: the server clears SmartHosts with MX routing
    else:
        switched_off = previous is None or previous["UseMXRecord"]
        if not obj["SmartHosts"] or (switched_off and not bound.get("SmartHosts")):
            raise _invalid("SmartHosts must be specified in the same command when"
                           " UseMXRecord is $false.", target=name)
    if (obj.get("TlsDomain") or "").strip() == "*":
        raise _invalid("TlsDomain can't be '*'.", target=name)
    if obj["RouteAllMessagesViaOnPremises"] and not any(
            c["Enabled"] and c["ConnectorType"] == "OnPremises"
            and not c["AssociatedAcceptedDomains"]
            for c in tenant.state["inbound_connectors"]):
        raise _invalid("RouteAllMessagesViaOnPremises needs an enabled OnPremises"
                       " inbound connector without AssociatedAcceptedDomains.",
                       target=name)
    if (obj["ConnectorType"] == "OnPremises" and "*" in obj["RecipientDomains"]
            and not obj["RouteAllMessagesViaOnPremises"]):
        raise _invalid("An OnPremises connector that doesn't route all messages"
                       " can't have RecipientDomains '*'.", target=name)


def rules_routing_through(state: dict, connector_name: str) -> list[str]:
    """Names of rules whose RouteMessageOutboundConnector names the connector."""
    wanted = connector_name.lower()
    return [r["Name"] for r in state["transport_rules"]
            if (r.get("RouteMessageOutboundConnector") or "").lower() == wanted]


def still_referenced(state: dict, obj: dict, action: str) -> None:
    """§9 "Connectors referenced by rules": remove/disable/un-scope/rename fail."""
    rules = rules_routing_through(state, obj["Name"])
    if rules:
        listed = ", ".join(f"'{r}'" for r in rules)
        raise exo_error(
            "Microsoft.Exchange.Management.Tasks."
            "ConnectorIncorrectUsageConnectorStillReferencedException",
            f"The connector '{obj['Name']}' can't be {action} because transport"
            f" rule(s) {listed} route messages through it"
            " (RouteMessageOutboundConnector).",
            category="InvalidOperation",
            error_id="ConnectorIncorrectUsageConnectorStillReferencedException",
            target=obj["Name"])


def _new_connector(tenant, bound: dict, kind: str) -> dict:
    key = f"{kind}_connectors"
    name = bound.pop("Name")
    check_name(name, connector=True)
    _check_unique(tenant.state[key], name, kind)
    make = inbound_connector if kind == "inbound" else outbound_connector
    seed = f"{tenant.state['tenant']['tenant_id']}:{kind}:{name}:" \
           f"{len(tenant.state.get('changes', []))}"
    obj = make(tenant.state, name, tenant.now(), guid=new_guid(seed))
    _apply(obj, bound, _INBOUND_LISTS if kind == "inbound" else _OUTBOUND_LISTS)
    return obj


@exo_cmdlet("Get-InboundConnector", {"Identity": "string", "ResultSize": "any"})
def get_inbound_connector(tenant, p):
    """All inbound connectors, or those the identity names (§2, §9)."""
    found = select(tenant.state["inbound_connectors"], p.get("Identity"))
    return _out(*_limit(found, p.get("ResultSize"), tenant, "Get-InboundConnector"))


@exo_cmdlet("New-InboundConnector", {"Name": "string", **INBOUND_PARAMETERS},
            required=("Name", "SenderDomains"), should_process=True)
def new_inbound_connector(tenant, p):
    """Create an inbound connector with the §2 defaults and §9 checks."""
    obj = _new_connector(tenant, p, "inbound")
    _check_inbound(tenant, obj)
    _warn_overlap(tenant, obj)
    tenant.state["inbound_connectors"].append(obj)
    _commit(tenant, "New-InboundConnector", "inbound_connectors", None, obj,
            obj["Name"])
    return _out(obj)


@exo_cmdlet("Set-InboundConnector",
            {"Identity": "string", "Name": "string",
             **_as_set_spec(INBOUND_PARAMETERS)},
            required=("Identity",), should_process=True)
def set_inbound_connector(tenant, p):
    """Change an inbound connector; slash-named ones are refused (§9, §5.1)."""
    obj = find_one(tenant.state["inbound_connectors"], p["Identity"])
    _refuse_slash_name(obj)
    before, draft = copy.deepcopy(obj), copy.deepcopy(obj)
    _rename_draft(tenant, draft, p.get("Name"), "inbound")
    _apply(draft, p, _INBOUND_LISTS)
    _check_inbound(tenant, draft)
    _warn_overlap(tenant, draft)
    touch(draft, tenant.now())
    obj.clear()
    obj.update(draft)
    _commit(tenant, "Set-InboundConnector", "inbound_connectors", before, obj,
            before["Name"])
    return []


@exo_cmdlet("Remove-InboundConnector", {"Identity": "string"},
            required=("Identity",), should_process=True)
def remove_inbound_connector(tenant, p):
    """Remove an inbound connector; slash-named ones are refused (§5.1)."""
    obj = find_one(tenant.state["inbound_connectors"], p["Identity"])
    _refuse_slash_name(obj)
    tenant.state["inbound_connectors"].remove(obj)
    _commit(tenant, "Remove-InboundConnector", "inbound_connectors", obj, None,
            obj["Name"])
    return []


def _rename_draft(tenant, draft: dict, new_name: str | None, kind: str) -> None:
    if new_name is None or new_name == draft["Name"]:
        return
    check_name(new_name, connector=True)
    _check_unique(tenant.state[f"{kind}_connectors"], new_name, kind,
                  ignore=find_one(tenant.state[f"{kind}_connectors"], draft["Guid"]))
    rename(draft, new_name, transport_dn(tenant.state))


@exo_cmdlet("Get-OutboundConnector",
            {"Identity": "string", "IncludeTestModeConnectors": "bool",
             "IsTransportRuleScoped": "bool", "ResultSize": "any"})
def get_outbound_connector(tenant, p):
    """Outbound connectors (§3); test-mode ones only with
    -IncludeTestModeConnectors $true, scope filtered by -IsTransportRuleScoped.
    """
    found = select(tenant.state["outbound_connectors"], p.get("Identity"))
    if not p.get("IncludeTestModeConnectors"):
        found = [c for c in found if not c["TestMode"]]
    if p.get("IsTransportRuleScoped") is not None:
        found = [c for c in found
                 if c["IsTransportRuleScoped"] == p["IsTransportRuleScoped"]]
    return _out(*_limit(found, p.get("ResultSize"), tenant, "Get-OutboundConnector"))


@exo_cmdlet("New-OutboundConnector", {"Name": "string", **OUTBOUND_PARAMETERS},
            required=("Name",), should_process=True)
def new_outbound_connector(tenant, p):
    """Create an outbound connector with the §3 defaults and §9 checks."""
    bound = dict(p)
    obj = _new_connector(tenant, p, "outbound")
    _check_outbound(tenant, obj, bound, None)
    tenant.state["outbound_connectors"].append(obj)
    _commit(tenant, "New-OutboundConnector", "outbound_connectors", None, obj,
            obj["Name"])
    return _out(obj)


@exo_cmdlet("Set-OutboundConnector",
            {"Identity": "string", "Name": "string",
             **_as_set_spec({**OUTBOUND_PARAMETERS, **OUTBOUND_SET_ONLY})},
            required=("Identity",), should_process=True)
def set_outbound_connector(tenant, p):
    """Change an outbound connector; one a rule routes through cannot be
    disabled, un-scoped or renamed (§9), slash-named ones not at all (§5.1)."""
    obj = find_one(tenant.state["outbound_connectors"], p["Identity"])
    _refuse_slash_name(obj)
    if p.get("Enabled") is False and obj["Enabled"]:
        still_referenced(tenant.state, obj, "disabled")
    if p.get("IsTransportRuleScoped") is False and obj["IsTransportRuleScoped"]:
        still_referenced(tenant.state, obj, "taken out of transport-rule scope")
    if p.get("Name") is not None and p["Name"].lower() != obj["Name"].lower():
        still_referenced(tenant.state, obj, "renamed")
    before, draft = copy.deepcopy(obj), copy.deepcopy(obj)
    _rename_draft(tenant, draft, p.get("Name"), "outbound")
    _apply(draft, p, _OUTBOUND_LISTS)
    _check_outbound(tenant, draft, p, before)
    touch(draft, tenant.now())
    obj.clear()
    obj.update(draft)
    _commit(tenant, "Set-OutboundConnector", "outbound_connectors", before, obj,
            before["Name"])
    return []


@exo_cmdlet("Remove-OutboundConnector", {"Identity": "string"},
            required=("Identity",), should_process=True)
def remove_outbound_connector(tenant, p):
    """Remove an outbound connector unless a rule routes through it (§9)."""
    obj = find_one(tenant.state["outbound_connectors"], p["Identity"])
    _refuse_slash_name(obj)
    still_referenced(tenant.state, obj, "removed")
    tenant.state["outbound_connectors"].remove(obj)
    _commit(tenant, "Remove-OutboundConnector", "outbound_connectors", obj, None,
            obj["Name"])
    return []


# --- transport rules -----------------------------------------------------------

_NS = "Microsoft.Exchange.MessagingPolicies.Rules.Tasks."
_SCOPE = "enum:InOrganization|NotInOrganization"
_MESSAGE_TYPE = ("enum:OOF|AutoForward|Encrypted|Calendaring|PermissionControlled"
                 "|Voicemail|Signed|ApprovalRequest|ReadReceipt")

# Condition parameter -> (predicate class, kind). Each has an ExceptIf twin.
# §4: Conditions/Exceptions/Actions list .NET class names; the class names
# beyond FromScopePredicate follow the same pattern [I].
RULE_CONDITIONS = {
    "FromScope": ("FromScopePredicate", _SCOPE),
    "SentToScope": ("SentToScopePredicate",
                    "enum:InOrganization|NotInOrganization|ExternalPartner"
                    "|ExternalNonPartner"),
    "From": ("FromPredicate", "strings"),
    "SentTo": ("SentToPredicate", "strings"),
    "RecipientDomainIs": ("RecipientDomainIsPredicate", "strings"),
    "SenderDomainIs": ("SenderDomainIsPredicate", "strings"),
    "HeaderContainsMessageHeader": ("HeaderContainsPredicate", "string"),
    "HeaderContainsWords": ("HeaderContainsPredicate", "strings"),
    "HeaderMatchesMessageHeader": ("HeaderMatchesPredicate", "string"),
    "HeaderMatchesPatterns": ("HeaderMatchesPredicate", "strings"),
    "SCLOver": ("SclOverPredicate", "int"),
    "MessageTypeMatches": ("MessageTypeMatchesPredicate", _MESSAGE_TYPE),
    "SubjectContainsWords": ("SubjectContainsPredicate", "strings"),
    "SubjectOrBodyContainsWords": ("SubjectOrBodyContainsPredicate", "strings"),
    "FromAddressContainsWords": ("FromAddressContainsPredicate", "strings"),
    "AnyOfRecipientAddressContainsWords": ("AnyOfRecipientAddressContainsPredicate",
                                           "strings"),
    "SenderIpRanges": ("SenderIpRangesPredicate", "strings"),
    "AttachmentSizeOver": ("AttachmentSizeOverPredicate", "string"),
}
# Action parameter -> (action class, kind, default).
RULE_ACTIONS = {
    "RouteMessageOutboundConnector": ("RouteMessageOutboundConnectorAction",
                                      "string", None),
    "SetHeaderName": ("SetHeaderAction", "string", None),
    "SetHeaderValue": ("SetHeaderAction", "string", None),
    "RemoveHeader": ("RemoveHeaderAction", "string", None),
    "SetSCL": ("SetSclAction", "int", None),
    "PrependSubject": ("PrependSubjectAction", "string", None),
    "ApplyHtmlDisclaimerText": ("ApplyHtmlDisclaimerAction", "string", None),
    "ApplyHtmlDisclaimerLocation": ("ApplyHtmlDisclaimerAction",
                                    "enum:Append|Prepend", None),
    "ApplyHtmlDisclaimerFallbackAction": ("ApplyHtmlDisclaimerAction",
                                          "enum:Wrap|Ignore|Reject", None),
    "RedirectMessageTo": ("RedirectMessageAction", "strings", None),
    "BlindCopyTo": ("BlindCopyToAction", "strings", None),
    "RejectMessageReasonText": ("RejectMessageAction", "string", None),
    "SetAuditSeverity": ("SetAuditSeverityAction",
                         "enum:DoNotAudit|Low|Medium|High", None),
    "DeleteMessage": ("DeleteMessageAction", "bool", False),
    "Quarantine": ("QuarantineAction", "bool", False),
    "StopRuleProcessing": ("StopRuleProcessingAction", "bool", False),
}
# Parameters that only make sense together (one predicate or action each) [I].
_PAIRS = (("HeaderContainsMessageHeader", "HeaderContainsWords"),
          ("HeaderMatchesMessageHeader", "HeaderMatchesPatterns"),
          ("SetHeaderName", "SetHeaderValue"))

RULE_SETTINGS = {
    "Priority": "int", "Comments": "string",
    "Mode": "enum:Enforce|Audit|AuditAndNotify",
    "ActivationDate": "datetime", "ExpiryDate": "datetime",
    "RuleErrorAction": "enum:Ignore|Defer",
    "SenderAddressLocation": "enum:Header|Envelope|HeaderOrEnvelope",
    "RecipientAddressType": "enum:Original|Resolved",
    "RuleSubType": "enum:None|Dlp",
}


def _rule_parameters() -> dict[str, str]:
    spec = dict(RULE_SETTINGS)
    for name, (_, kind) in RULE_CONDITIONS.items():
        spec[name] = kind
        spec["ExceptIf" + name] = kind
    for name, (_, kind, _) in RULE_ACTIONS.items():
        spec[name] = kind
    return spec


RULE_PARAMETERS = _rule_parameters()


def _rule_fields(rule: dict) -> tuple[list, list, list]:
    def classes(names, table):
        found = []
        for name in names:
            value = rule.get(name)
            if value not in (None, [], False):
                cls = _NS + table[name.removeprefix("ExceptIf")][0]
                if cls not in found:
                    found.append(cls)
        return found

    conditions = classes(RULE_CONDITIONS, RULE_CONDITIONS)
    exceptions = classes(["ExceptIf" + n for n in RULE_CONDITIONS], RULE_CONDITIONS)
    actions = classes(RULE_ACTIONS, RULE_ACTIONS)
    return conditions, exceptions, actions


def _phrase(name: str, value) -> str:
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.removeprefix("ExceptIf"))
    if isinstance(value, list):
        shown = " or ".join(f"'{v}'" for v in value)
    elif isinstance(value, bool):
        return words
    else:
        shown = f"'{value}'"
    return f"{words} {shown}"


def describe_rule(rule: dict) -> str:
    """§4 Description: "If the message: … Take the following actions: …"."""
    def lines(names):
        return [_phrase(n, rule[n]) for n in names
                if rule.get(n) not in (None, [], False)]

    conditions = lines(RULE_CONDITIONS) or ["Applies to all messages"]
    actions = lines(RULE_ACTIONS)
    exceptions = lines(["ExceptIf" + n for n in RULE_CONDITIONS])
    text = "If the message:\r\n" + "".join(f"\t{c}\r\n" for c in conditions)
    text += "Take the following actions:\r\n" + "".join(f"\t{a}\r\n" for a in actions)
    if exceptions:
        text += "Except if the message:\r\n" + "".join(f"\t{e}\r\n"
                                                        for e in exceptions)
    return text


def _refresh_derived(rule: dict) -> None:
    conditions, exceptions, actions = _rule_fields(rule)
    rule["Conditions"] = conditions or None
    rule["Exceptions"] = exceptions or None
    rule["Actions"] = actions or None
    rule["Description"] = describe_rule(rule)
    rule["Size"] = len(rule["Description"].encode("utf-8")) * 2
    patterns = (rule.get("HeaderMatchesPatterns") or []) + (
        rule.get("ExceptIfHeaderMatchesPatterns") or [])
    rule["RegexSize"] = sum(len(p) for p in patterns)


def transport_rule(state: dict, name: str, when: datetime, *, priority: int,
                   author: str = "Administrator", guid: str | None = None,
                   enabled: bool = True, **props) -> dict:
    """A full TransportRule: §4 head, every condition/ExceptIf/action, §4 tail."""
    guid = guid or new_guid(f"{state['tenant']['tenant_id']}:rule:{name}")
    rule = {
        "Priority": priority, "DlpPolicy": None, "DlpPolicyId": ZERO_GUID,
        "Comments": None, "CreatedBy": author, "LastModifiedBy": author,
        "ManuallyModified": False, "ActivationDate": None, "ExpiryDate": None,
        "Description": "", "RuleVersion": "15.0.3.0", "Size": 0,
        "Conditions": None, "Exceptions": None, "Actions": None,
        "State": "Enabled" if enabled else "Disabled", "Mode": "Enforce",
        "IsRuleConfigurationSupported": True,
        "RuleConfigurationUnsupportedReason": None, "RuleErrorAction": "Ignore",
        "SenderAddressLocation": "Header", "RecipientAddressType": "Resolved",
        "RuleSubType": "None", "RegexSize": 0, "UseLegacyRegex": False,
    }
    for cond in RULE_CONDITIONS:
        rule[cond] = None
        rule["ExceptIf" + cond] = None
    for action, (_, _, default) in RULE_ACTIONS.items():
        rule[action] = default
    rule.update(props)
    rule.update(rule_tail(state, name, guid, when))
    _refresh_derived(rule)
    return rule


def ordered_rules(state: dict) -> list[dict]:
    return sorted(state["transport_rules"], key=lambda r: r["Priority"])


def _place(state: dict, rule: dict, priority: int | None) -> None:
    """§9 "Priority": insert at an index, others move down; no gaps."""
    rules = [r for r in ordered_rules(state) if r is not rule]
    rules.insert(len(rules) if priority is None else priority, rule)
    for index, item in enumerate(rules):
        item["Priority"] = index
    state["transport_rules"] = rules


def _check_priority(state: dict, priority: int | None, *, new: bool) -> None:
    if priority is None:
        return
    count = len(state["transport_rules"])
    highest = count if new else count - 1
    if priority < 0:
        raise CmdletError(
            f"Cannot validate argument on parameter 'Priority'. The {priority}"
            " argument is less than the minimum allowed range of 0.",
            category="InvalidData", error_id="ParameterArgumentValidationError",
            target="Priority")
    if priority > highest:
        raise exo_error(
            "Microsoft.Exchange.MessagingPolicies.Rules.Tasks.InvalidPriorityException",
            f"The value of parameter Priority, {priority}, is out of range. The"
            f" valid range is 0 to {highest}.",
            category="InvalidArgument", error_id="InvalidPriorityException",
            target="Priority")


def route_target(state: dict, identity: str) -> str:
    """§9: RouteMessageOutboundConnector needs one existing, enabled,
    IsTransportRuleScoped connector; the rule stores its Name (§4)."""
    found = [c for c in state["outbound_connectors"] if identifies(c, identity)]
    if not found:
        raise _argument(f"The outbound connector '{identity}' specified for"
                        " RouteMessageOutboundConnector couldn't be found.", identity)
    if len(found) > 1:
        raise _argument(f"The outbound connector '{identity}' isn't unique.", identity)
    connector = found[0]
    if not connector["Enabled"]:
        raise _argument(f"The outbound connector '{connector['Name']}' is disabled;"
                        " a rule can route only through an enabled connector.",
                        identity)
    if not connector["IsTransportRuleScoped"]:
        raise _argument(f"The outbound connector '{connector['Name']}' isn't scoped"
                        " to transport rules (IsTransportRuleScoped is $false).",
                        identity)
    return connector["Name"]


def _check_rule(state: dict, rule: dict, bound: dict) -> None:
    for first, second in _PAIRS:
        for prefix in ("", "ExceptIf") if first.startswith("Header") else ("",):
            a, b = rule.get(prefix + first), rule.get(prefix + second)
            if (a is None) != (b is None):
                raise _argument(f"The {prefix + first} and {prefix + second}"
                                " parameters must be used together.", rule["Name"])
    for name in ("SCLOver", "ExceptIfSCLOver", "SetSCL"):
        value = rule.get(name)
        if value is not None and not -1 <= value <= 9:
            raise CmdletError(
                f"Cannot validate argument on parameter '{name}'. The argument"
                f" {value} is outside the range -1 to 9.",
                category="InvalidData", error_id="ParameterArgumentValidationError",
                target=name)
    if bound.get("RouteMessageOutboundConnector") is not None:
        rule["RouteMessageOutboundConnector"] = route_target(
            state, bound["RouteMessageOutboundConnector"])


def _apply_rule(tenant, rule: dict, bound: dict) -> None:
    for key, value in bound.items():
        if key in ("Identity", "Name", "Priority", "Enabled"):
            continue
        if key in ("ActivationDate", "ExpiryDate"):
            # §10: a past ActivationDate is stored as null [X].
            value = None if value is None or (
                key == "ActivationDate" and value <= tenant.now()) else iso(value)
        rule[key] = value


def _author(tenant) -> str:
    return (tenant.connection or {}).get("DisplayName", "Administrator")


@exo_cmdlet("Get-TransportRule",
            {"Identity": "string", "State": "enum:Enabled|Disabled",
             "ResultSize": "any", "ExcludeConditionActionDetails": "switch"})
def get_transport_rule(tenant, p):
    """Rules in Priority order (§4); `-State` filters (§4 State values)."""
    found = select(ordered_rules(tenant.state), p.get("Identity"))
    if p.get("State"):
        found = [r for r in found if r["State"] == p["State"]]
    rules = _out(*_limit(found, p.get("ResultSize"), tenant, "Get-TransportRule"))
    if p.get("ExcludeConditionActionDetails"):
        detail = set(RULE_PARAMETERS) - set(RULE_SETTINGS)
        rules = [{k: v for k, v in r.items() if k not in detail} for r in rules]
    return rules


@exo_cmdlet("New-TransportRule",
            {"Name": "string", "Enabled": "bool", "UseLegacyRegex": "bool",
             **RULE_PARAMETERS},
            required=("Name",), should_process=True)
def new_transport_rule(tenant, p):
    """Create a rule: State from -Enabled, inserted at -Priority or last (§4, §9)."""
    name = p["Name"]
    check_name(name, connector=False)
    _check_unique(tenant.state["transport_rules"], name, "rule")
    _check_priority(tenant.state, p.get("Priority"), new=True)
    seed = f"{tenant.state['tenant']['tenant_id']}:rule:{name}:" \
           f"{len(tenant.state.get('changes', []))}"
    rule = transport_rule(tenant.state, name, tenant.now(), priority=0,
                          author=_author(tenant), guid=new_guid(seed),
                          enabled=p.get("Enabled", True))
    _apply_rule(tenant, rule, p)
    _check_rule(tenant.state, rule, p)
    _refresh_derived(rule)
    _place(tenant.state, rule, p.get("Priority"))
    _commit(tenant, "New-TransportRule", "transport_rules", None, rule, name)
    return _out(rule)


@exo_cmdlet("Set-TransportRule", {"Identity": "string", "Name": "string",
                                  **RULE_PARAMETERS},
            required=("Identity",), should_process=True)
def set_transport_rule(tenant, p):
    """Change a rule; -Priority moves it (§9); there is no -Enabled (§10)."""
    rule = find_one(tenant.state["transport_rules"], p["Identity"])
    _check_priority(tenant.state, p.get("Priority"), new=False)
    before, draft = copy.deepcopy(rule), copy.deepcopy(rule)
    new_name = p.get("Name")
    if new_name is not None and new_name != rule["Name"]:
        check_name(new_name, connector=False)
        _check_unique(tenant.state["transport_rules"], new_name, "rule", ignore=rule)
        draft["Name"] = draft["Identity"] = new_name
        draft["DistinguishedName"] = f"CN={new_name},{rules_dn(tenant.state)}"
    _apply_rule(tenant, draft, p)
    _check_rule(tenant.state, draft, p)
    _refresh_derived(draft)
    draft["LastModifiedBy"] = _author(tenant)
    draft["WhenChanged"] = iso(tenant.now())
    rule.clear()
    rule.update(draft)
    if p.get("Priority") is not None:
        _place(tenant.state, rule, p["Priority"])
    _commit(tenant, "Set-TransportRule", "transport_rules", before, rule,
            before["Name"])
    return []


def _set_state(tenant, command: str, identity: str, state_value: str) -> list:
    rule = find_one(tenant.state["transport_rules"], identity)
    before = copy.deepcopy(rule)
    rule["State"] = state_value
    rule["WhenChanged"] = iso(tenant.now())
    rule["LastModifiedBy"] = _author(tenant)
    _commit(tenant, command, "transport_rules", before, rule, rule["Name"])
    return []


@exo_cmdlet("Enable-TransportRule", {"Identity": "string"}, required=("Identity",),
            should_process=True)
def enable_transport_rule(tenant, p):
    """State becomes "Enabled" (§4)."""
    return _set_state(tenant, "Enable-TransportRule", p["Identity"], "Enabled")


@exo_cmdlet("Disable-TransportRule", {"Identity": "string"},
            required=("Identity",), should_process=True)
def disable_transport_rule(tenant, p):
    """State becomes "Disabled" (§4); the rule keeps its connector reference."""
    return _set_state(tenant, "Disable-TransportRule", p["Identity"], "Disabled")


@exo_cmdlet("Remove-TransportRule", {"Identity": "string"},
            required=("Identity",), should_process=True)
def remove_transport_rule(tenant, p):
    """Remove a rule; the priorities below it close the gap (§9 [I])."""
    rule = find_one(tenant.state["transport_rules"], p["Identity"])
    tenant.state["transport_rules"].remove(rule)
    for index, item in enumerate(ordered_rules(tenant.state)):
        item["Priority"] = index
    _commit(tenant, "Remove-TransportRule", "transport_rules", rule, None,
            rule["Name"])
    return []


# --- the session ------------------------------------------------------------------

CONNECT_PARAMETERS = {
    "Organization": "string", "AppId": "string", "CertificateFilePath": "string",
    "CertificateThumbprint": "string", "Certificate": "any",
    "CertificatePassword": "any", "Device": "switch", "UserPrincipalName": "string",
    "ShowBanner": "switch", "ShowProgress": "bool", "SkipLoadingFormatData": "switch",
    "SkipLoadingCmdletHelp": "switch", "LoadCmdletHelp": "switch",
    "ExchangeEnvironmentName": "enum:O365Default|O365China|O365GermanyCloud"
                               "|O365USGovDoD|O365USGovGCCHigh",
    "ConnectionUri": "string", "AzureADAuthorizationEndpointUri": "string",
    "DelegatedOrganization": "string", "Prefix": "string", "CommandName": "strings",
    "PageSize": "int", "EnableErrorReporting": "switch", "LogDirectoryPath": "string",
    "TrackPerformance": "bool", "UseMultithreading": "bool", "DisableWAM": "switch",
}


def _auth_error(text: str, error_id: str) -> CmdletError:
    return CmdletError(text, category="AuthenticationError", error_id=error_id,
                       target="Connect-ExchangeOnline")


@exo_cmdlet("Connect-ExchangeOnline", CONNECT_PARAMETERS, needs_connection=False)
def connect_exchange_online(tenant, p):
    """Sign in and load the EXO cmdlets (§7; design.md "pwsh side").

    Accepted: certificate app-only (-AppId -CertificateFilePath -Organization)
    and device login; -Organization, when given, must be this tenant's
    initial domain. The certificate password never travels in a request
    (docs/internals.md "Session order"): the bridge reads it from the
    environment, so a request that carries one is refused.
    """
    if "CertificatePassword" in p:
        raise CmdletError(
            "CertificatePassword must not be sent in a request; the bridge reads"
            " it from RUNBOOK_CERT_PASSWORD.", category="SecurityError",
            error_id="RunbookSecretInRequest", target="CertificatePassword")
    organization = p.get("Organization")
    initial = tenant.state["tenant"]["initial_domain"]
    if organization is not None and organization.lower() != initial.lower():
        raise _auth_error(
            f"AADSTS90002: Tenant '{organization}' not found. Check to make sure"
            " you have the correct tenant ID and are signing into the correct"
            " cloud.", "AADSTS90002")
    app = p.get("AppId")
    if app is not None:
        _check_certificate(p, organization)
    elif not p.get("Device") and organization is None:
        raise _auth_error(
            "Interactive sign-in needs a browser, which a non-interactive session"
            " doesn't have. Use -Device or certificate authentication.",
            "InteractiveSignInUnavailable")
    tenant.connection = _connection(tenant, app)
    log.info("connected to %s (%s)", initial,
             "certificate" if app else "delegated")
    return []


def _check_certificate(p: dict, organization: str | None) -> None:
    if organization is None:
        raise _auth_error("-Organization is required with app-only (certificate)"
                          " authentication.", "OrganizationRequired")
    path = p.get("CertificateFilePath")
    if path is None and p.get("CertificateThumbprint") is None \
            and p.get("Certificate") is None:
        raise _auth_error("App-only authentication needs -CertificateFilePath,"
                          " -CertificateThumbprint or -Certificate.",
                          "CertificateRequired")
    if path is not None and not os.path.isfile(path):
        raise CmdletError(f"Could not find file '{path}'.", category="ObjectNotFound",
                          error_id="FileNotFoundException", target=path)


def _connection(tenant, app: str | None) -> dict:
    """One Get-ConnectionInformation object (§7 property list and order)."""
    info = tenant.state["tenant"]
    number = (tenant.connection or {}).get("Id", 0) + 1
    seed = f"{info['tenant_id']}:connection:{number}:{iso(tenant.now())}"
    return {
        "ConnectionId": new_guid(seed), "State": "Connected", "Id": number,
        "Name": f"ExchangeOnline_{number}",
        "UserPrincipalName": None if app else f"admin@{info['initial_domain']}",
        "ConnectionUri": "https://outlook.office365.com",
        "AzureAdAuthorizationEndpointUri":
            "https://login.microsoftonline.com/organizations",
        "TokenExpiryTimeUTC": iso(tenant.now() + timedelta(hours=1)),
        "CertificateAuthentication": app is not None,
        "ModuleName": f"/tmp/tmpEXO_{new_guid(seed)[:8]}.qnv",
        "ModulePrefix": "", "Organization": info["initial_domain"] if app else None,
        "DelegatedOrganization": None, "AppId": app, "PageSize": 1000,
        "TenantID": info["tenant_id"], "TokenStatus": "Active",
        "ConnectionUsedForInbuiltCmdlets": True, "IsEopSession": False,
        # Not a §7 field: the admin name rules record as CreatedBy (§4).
        "DisplayName": "Runbook App" if app else "Administrator",
    }


def _public_connection(connection: dict) -> dict:
    shown = dict(connection)
    shown.pop("DisplayName", None)
    return shown


@exo_cmdlet("Get-ConnectionInformation",
            {"ConnectionId": "strings", "ModulePrefix": "strings"},
            needs_connection=False)
def get_connection_information(tenant, p):
    """One object per connection, none when not connected (§7)."""
    if tenant.connection is None:
        return []
    return [_public_connection(tenant.connection)]


@exo_cmdlet("Disconnect-ExchangeOnline",
            {"ConnectionId": "strings", "ModulePrefix": "strings"},
            needs_connection=False, should_process=True)
def disconnect_exchange_online(tenant, p):
    """Close the connection; the EXO cmdlets go with it (§7 ModuleName)."""
    tenant.connection = None
    return []


# --- tenant-wide settings -------------------------------------------------------

@exo_cmdlet("Get-AcceptedDomain", {"Identity": "string", "ResultSize": "any"})
def get_accepted_domain(tenant, p):
    """Accepted domains (§5); Name = Identity = DomainName."""
    found = select(tenant.state["accepted_domains"], p.get("Identity"))
    return _out(*_limit(found, p.get("ResultSize"), tenant, "Get-AcceptedDomain"))


@exo_cmdlet("Get-OrganizationConfig", {"Identity": "string"})
def get_organization_config(tenant, p):
    """The organisation object with IsDehydrated (§6)."""
    return _out(tenant.state["organization_config"])


@exo_cmdlet("Enable-OrganizationCustomization", {}, should_process=True)
def enable_organization_customization(tenant, p):
    """IsDehydrated becomes false; on a hydrated tenant it is an error (§6)."""
    config = tenant.state["organization_config"]
    if not config["IsDehydrated"]:
        raise exo_error("System.InvalidOperationException",
                        "This operation is not required. Organization is already"
                        " enabled for customization.", category="InvalidOperation",
                        error_id="InvalidOperationException")
    before = copy.deepcopy(config)
    config["IsDehydrated"] = False
    config["WhenChangedUTC"] = iso(tenant.now())
    _commit(tenant, "Enable-OrganizationCustomization", "organization_config",
            before, config, config["Identity"])
    return []


@exo_cmdlet("Get-ArcConfig", {})
def get_arc_config(tenant, p):
    """No parameters; no object at all while ARC is unconfigured (§6)."""
    config = tenant.state.get("arc_config")
    return [] if config is None else _out(config)


@exo_cmdlet("Set-ArcConfig", {"Identity": "string", "ArcTrustedSealers": "strings"},
            required=("Identity",), should_process=True)
def set_arc_config(tenant, p):
    """-Identity Default or <TenantId>\\Default; `" "` empties the list (§6)."""
    identity = p["Identity"].strip()
    allowed = {"default", f"{tenant.state['tenant']['tenant_id']}\\default"}
    if identity.lower() not in allowed:
        raise not_found(identity)
    sealers = [s.strip() for s in (p.get("ArcTrustedSealers") or []) if s.strip()]
    before = copy.deepcopy(tenant.state.get("arc_config"))
    tenant.state["arc_config"] = arc_config(tenant.state, ",".join(sealers),
                                            tenant.now())
    _commit(tenant, "Set-ArcConfig", "arc_config", before,
            tenant.state["arc_config"], "Default")
    return []


def allow_list_entry(value: str) -> str:
    """§6 IPAllowList: IPv4 only; single, CIDR /24-/32, or a range ≤ 256."""
    text = (value or "").strip()
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
            if first.version != 4 or last.version != 4:
                raise ValueError("IPv6")
            if not 0 <= int(last) - int(first) < 256:
                raise _invalid(f"The IP range '{text}' is larger than 256 addresses.",
                               target=text)
            return text
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _invalid(f"'{text}' isn't a valid IPv4 address, CIDR range or IP"
                       " range for IPAllowList (IPv6 isn't supported).",
                       target=text) from None
    if net.version != 4:
        raise _invalid(f"'{text}' is IPv6; IPAllowList accepts IPv4 only.",
                       target=text)
    if net.prefixlen < 24:
        raise _invalid(f"The CIDR range '{text}' is too large; use /24 to /32.",
                       target=text)
    return text


def _policy(tenant, key: str, identity: str | None) -> list[dict]:
    return select([tenant.state[key]], identity)


@exo_cmdlet("Get-HostedConnectionFilterPolicy", {"Identity": "string"})
def get_hosted_connection_filter_policy(tenant, p):
    """The Default connection filter policy (§6)."""
    return _out(*_policy(tenant, "hosted_connection_filter_policy",
                         p.get("Identity")))


@exo_cmdlet("Set-HostedConnectionFilterPolicy",
            {"Identity": "string", "IPAllowList": "multi", "IPBlockList": "multi",
             "EnableSafeList": "bool", "AdminDisplayName": "string"},
            required=("Identity",), should_process=True)
def set_hosted_connection_filter_policy(tenant, p):
    """IPAllowList/IPBlockList as lists or @{Add=;Remove=} edits (§6)."""
    policy = find_one([tenant.state["hosted_connection_filter_policy"]],
                      p["Identity"])
    before = copy.deepcopy(policy)
    for key in ("IPAllowList", "IPBlockList"):
        if key in p:
            policy[key] = edit_list(policy[key], p[key], allow_list_entry)
    for key in ("EnableSafeList", "AdminDisplayName"):
        if key in p:
            policy[key] = p[key]
    policy["WhenChanged"] = policy["WhenChangedUTC"] = iso(tenant.now())
    _commit(tenant, "Set-HostedConnectionFilterPolicy",
            "hosted_connection_filter_policy", before, policy, policy["Identity"])
    return []


def _sender_address(value: str) -> str:
    text = (value or "").strip()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise _invalid(f"'{text}' isn't a valid SMTP address.", target=text)
    return text


@exo_cmdlet("Get-HostedContentFilterPolicy", {"Identity": "string"})
def get_hosted_content_filter_policy(tenant, p):
    """The Default anti-spam policy (seppmail365cloud.md §9 fields)."""
    return _out(*_policy(tenant, "hosted_content_filter_policy", p.get("Identity")))


@exo_cmdlet("Set-HostedContentFilterPolicy",
            {"Identity": "string", "AllowedSenders": "multi",
             "AllowedSenderDomains": "multi", "BlockedSenders": "multi",
             "BlockedSenderDomains": "multi",
             "MarkAsSpamSpfRecordHardFail": "enum:Off|On|Test",
             "SpamAction": "enum:MoveToJmf|AddXHeader|ModifySubject|Redirect|Delete"
                           "|Quarantine|NoAction",
             "BulkThreshold": "int", "AdminDisplayName": "string"},
            required=("Identity",), should_process=True)
def set_hosted_content_filter_policy(tenant, p):
    """AllowedSenders as a list or an edit; MarkAsSpamSpfRecordHardFail Off/On/Test."""
    policy = find_one([tenant.state["hosted_content_filter_policy"]], p["Identity"])
    before = copy.deepcopy(policy)
    for key, value in p.items():
        if key == "Identity":
            continue
        if key in ("AllowedSenders", "BlockedSenders"):
            policy[key] = edit_list(policy[key], value, _sender_address)
        elif key in ("AllowedSenderDomains", "BlockedSenderDomains"):
            policy[key] = edit_list(policy[key], value,
                                    lambda v: _domain_value(v, key))
        else:
            policy[key] = value
    policy["WhenChanged"] = policy["WhenChangedUTC"] = iso(tenant.now())
    _commit(tenant, "Set-HostedContentFilterPolicy", "hosted_content_filter_policy",
            before, policy, policy["Identity"])
    return []
