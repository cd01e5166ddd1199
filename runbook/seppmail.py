"""What the runbook knows about SEPPmail.cloud and the seppmail365cloud module.

Every fact here cites its section of the domain reference
(`shared/domain/seppmail365cloud.md`, "§n" below). The sandbox keeps its own,
independent model of the module; tests compare the two, so a mistake here
shows up as a failing test instead of being mirrored.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

import idna

ROUTING_MODES = ("inline", "parallel")
REGIONS = ("ch", "prv", "de", "dev")  # dev exists from module 2.0 (§1.2, §4)

# The first CBC-capable release (§0, §10 step 3).
CBC_MINIMUM_VERSION = "1.3.0-preview1"
MODULE_NAME = "seppmail365cloud"

# Connector names from 1.0.0 to 2.0.2 (§2.1). Exchange compares names
# case-insensitively and the module itself spells them inconsistently.
CONNECTOR_NAMES = {
    ("inbound", "inline"): "[SEPPmail.cloud] Inbound-InLine",
    ("outbound", "inline"): "[SEPPmail.cloud] Outbound-InLine",
    ("inbound", "parallel"): "[SEPPmail.cloud] Inbound-Parallel",
    ("outbound", "parallel"): "[SEPPmail.cloud] Outbound-Parallel",
}

TEMP_CONNECTOR = "[SEPPmail.cloud] TempConnector EX505293"  # §2.1, §6
RULE_PREFIX = "[SEPPmail.cloud] - "  # §2.2


@dataclass(frozen=True)
class Region:
    """A SEPPmail.cloud region's addresses (§4, GeoRegion.json of 2.0.2)."""

    name: str
    gate: tuple[str, ...]
    relay: tuple[str, ...]
    mail: tuple[str, ...]
    allow_list: tuple[str, ...]

    @property
    def tls_domain(self) -> str:
        """The outbound TlsDomain and the wildcard certificate name (§3.1, §4)."""
        return f"*.{self.name}.seppmail.cloud"


REGION_DATA = {
    "ch": Region("ch", gate=("86.119.35.35", "217.20.196.81"),
                 relay=("86.119.38.33", "217.20.196.83"),
                 mail=("217.20.196.82", "86.119.37.4"),
                 allow_list=("86.119.9.0/29", "86.119.57.0/29", "217.20.196.64/27")),
    "de": Region("de", gate=("49.12.23.112", "167.233.8.136"),
                 relay=("162.55.72.221", "162.55.72.222"),
                 mail=("162.55.155.177", "49.12.22.120"),
                 allow_list=("162.55.72.192/27",)),
    "prv": Region("prv", gate=("49.12.21.237",), relay=("116.202.109.112",),
                  mail=("49.12.100.186",),
                  allow_list=("78.47.79.19", "49.12.100.186", "142.132.235.199",
                              "162.55.174.218")),
    "dev": Region("dev", gate=("116.202.20.72",), relay=("49.12.184.143",),
                  mail=("49.12.102.31",),
                  allow_list=("182.140.90.166", "142.132.239.49", "49.12.220.100")),
}

# Microsoft's MX targets for a domain whose mail goes to Exchange Online first
# (parallel mode). Decided by suffix: the newer `mx.microsoft` form is given out
# per tenant and cannot be built from the domain name.
MICROSOFT_MX_SUFFIXES = ("mail.protection.outlook.com", "mx.microsoft")

_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

# What every domain check tells a person who gave something else (issue 10).
DOMAIN_ALLOWED = ("a domain name such as contoso.ch: labels of 1-63 letters, digits "
                  "or hyphens (no hyphen at either end), at least two labels, at most "
                  "253 characters, no wildcard, the last label not all digits")


class DomainNameError(ValueError):
    """Not a domain name; `reason` says which rule of `DOMAIN_ALLOWED` it breaks."""

    def __init__(self, domain: object, reason: str):
        self.domain = domain
        self.reason = reason
        super().__init__(f"not a domain name: {domain!r} ({reason})")


def ascii_domain(domain: str) -> str:
    """The domain as DNS and Exchange compare it: IDNA (punycode), lower case.

    Accepts the form a person types (``müller.ch``) and the form Exchange shows
    (``xn--mller-kva.ch``); raises DomainNameError for anything that is not a
    valid domain name.
    """
    text = domain.strip().rstrip(".")
    if not text or any(c.isspace() for c in text):
        raise DomainNameError(domain, "empty or holding white space")
    if "*" in text:
        raise DomainNameError(domain, "a wildcard; name each domain")
    try:
        # IDNA 2008 with UTS 46 mapping, as registries and resolvers use today:
        # straße.de is xn--strae-oqa.de, not strasse.de (the IDNA 2003 codec).
        encoded = idna.encode(text, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise DomainNameError(domain, f"IDNA refuses it: {exc}") from exc
    labels = encoded.split(".")
    if len(encoded) > 253:
        raise DomainNameError(domain, f"{len(encoded)} characters")
    if len(labels) < 2:
        raise DomainNameError(domain, "a single label")
    bad = next((label for label in labels if not _DOMAIN_LABEL.match(label)), None)
    if bad is not None:
        raise DomainNameError(domain, f"label {bad!r}")
    # An address such as 1.2.3.4 passes the label rule; no top-level domain
    # is all digits, so this tells them apart.
    if labels[-1].isdigit():
        raise DomainNameError(domain, "an IP address, or a last label of digits only")
    return encoded


def dashed(domain: str) -> str:
    """``contoso.ch`` -> ``contoso-ch``: the module's per-domain host label (§3.1)."""
    return ascii_domain(domain).replace(".", "-")


def gate_host(domain: str) -> str:
    """The inline MX target and inbound gateway (§4, DeploymentInfo step 3)."""
    return f"{dashed(domain)}.gate.seppmail.cloud"


def relay_host(domain: str) -> str:
    """The inline outbound smarthost (§3.1)."""
    return f"{dashed(domain)}.relay.seppmail.cloud"


def mail_host(domain: str) -> str:
    """The parallel outbound smarthost (§3.1)."""
    return f"{dashed(domain)}.mail.seppmail.cloud"


def smarthost(domain: str, routing: str) -> str:
    """Outbound smarthost: region is not part of the name (§3.1 notes)."""
    return relay_host(domain) if _routing(routing) == "inline" else mail_host(domain)


def certificate_name(tenant_id: str, region: str) -> str:
    """The CBC inbound TlsSenderCertificateName (§3.1, §3.2)."""
    return f"{tenant_id.lower()}.{_region(region)}.seppmail.cloud"


def cbc_readiness_name(tenant_id: str) -> str:
    """The TXT record that exists once SEPPmail.cloud is ready for CBC (§3.2).

    The module hashes the tenant ID string as it has it (a lower-case GUID).
    """
    digest = hashlib.sha1(tenant_id.lower().encode("ascii")).hexdigest()
    return f"{digest}.cbc.seppmail.cloud"


def region_of_address(address: str, routing: str) -> str | None:
    """The region whose Gate (inline) or Mail (parallel) list holds `address` (§4).

    The module checks ch, de, prv, dev in that order and keeps the last match.
    """
    found = None
    ip = ipaddress.ip_address(address)
    for name in ("ch", "de", "prv", "dev"):
        region = REGION_DATA[name]
        pool = region.gate if _routing(routing) == "inline" else region.mail
        if any(ip == ipaddress.ip_address(a) for a in pool):
            found = name
    return found


def connector_name(direction: str, routing: str) -> str:
    return CONNECTOR_NAMES[(direction, _routing(routing))]


def expected_connectors(*, tenant_id: str, domain: str, region: str, routing: str,
                        module_version: str) -> dict[str, dict]:
    """The CBC connectors the module creates, by name, with their values (§3.1).

    `domain` is the one the connectors are built from (the tenant default
    domain when the module is given several, §1.4 New-SC365Setup).
    """
    from runbook.powershell.versions import Version  # local: avoids a cycle

    routing = _routing(routing)
    version = Version.parse(module_version)
    inline = routing == "inline"
    inbound = {
        "ConnectorType": "Partner" if inline else "OnPremises",
        "ConnectorSource": "Default",
        "CloudServicesMailEnabled": False,
        "RequireTls": True,
        "RestrictDomainsToCertificate": True,
        # Exchange shows both as the address space smtp:*;1 (exchange-objects §2).
        "SenderDomains": ["smtp:*;1"] if inline else ["*"],
        "TlsSenderCertificateName": certificate_name(tenant_id, region),
    }
    if not inline:
        inbound["RestrictDomainsToIPAddresses"] = False
    if version >= Version.parse("1.3.1"):
        inbound["EFSkipLastIP"] = True
    outbound = {
        "ConnectorType": "Partner" if inline else "OnPremises",
        "ConnectorSource": "Default",
        "CloudServicesMailEnabled": False,
        "SmartHosts": [smarthost(domain, routing)],
        "TlsSettings": "DomainValidation",
        "TlsDomain": REGION_DATA[_region(region)].tls_domain,
        "UseMXRecord": False,
        # p1 left inline outbound unscoped with RecipientDomains *; p2 scoped it.
        "IsTransportRuleScoped": not (inline and version < Version.parse("1.3.0-preview2")),
    }
    return {connector_name("inbound", routing): inbound,
            connector_name("outbound", routing): outbound}


def _routing(routing: str) -> str:
    value = {"i": "inline", "p": "parallel"}.get(routing, routing)
    if value not in ROUTING_MODES:
        raise ValueError(f"routing must be one of {', '.join(ROUTING_MODES)}, not {routing!r}")
    return value


def _region(region: str) -> str:
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, not {region!r}")
    return region


# Transport rules per module generation and routing mode, in creation order
# (§2.2: the p/i columns give the mode and the order index).
RULE_TITLES = {
    "050": "050 on SPF fail - no SEPPmail.Cloud",
    "060": "060 Add header X-SM-ruleversion",
    "100": "100 Route incoming e-mails to SEPPmail",
    "110-tagged": "110 Route incoming tagged e-mails to SEPPmail",
    "110-bgp": "110 Route incoming BGP e-mails to SEPPmail",
    "120": "120 Route incoming tagged e-mails to SEPPmail",
    "200": "200 Route outgoing e-mails to SEPPmail",
    "300": "300 Clean outbound SEPPmail header decrypted",
    "400": "400 Clean outbound SEPPmail header encrypted",
    "500": "500 Clean outbound SEPPmail header outgoing",
    "600": "600 Clean outbound SEPPmail header smarthost",
    "700": "700 Clean outbound header X-sepp-smarthost",
}
_CLEAN = ("300", "400", "500", "600")
# (first version of the generation, parallel rules, inline rules)
_RULE_GENERATIONS = (
    ("1.2.5", ("050", "100", "200") + _CLEAN, ()),
    ("1.3.0-preview1", ("050", "060", "100", "200") + _CLEAN + ("700",), ()),
    ("1.3.0-preview2", ("050", "060", "100", "200") + _CLEAN + ("700",), ("060", "200")),
    ("1.3.5", ("060", "100", "200") + _CLEAN + ("700",), ("060", "200")),
    ("1.3.8", ("060", "100", "110-tagged", "200") + _CLEAN + ("700",), ("060", "200")),
    ("2.0.2", ("060", "100", "110-bgp", "120", "200") + _CLEAN + ("700",), ("060", "200")),
)


def expected_rules(module_version: str, routing: str) -> list[str]:
    """The rule names New-SC365Rules creates, in priority order (§2.2)."""
    from runbook.powershell.versions import Version

    version = Version.parse(module_version)
    chosen = _RULE_GENERATIONS[0]
    for generation in _RULE_GENERATIONS:
        if version >= Version.parse(generation[0]):
            chosen = generation
    keys = chosen[1] if _routing(routing) == "parallel" else chosen[2]
    return [RULE_PREFIX + RULE_TITLES[k] for k in keys]
