"""DNS checks before a CBC migration: MX, SEPPmail.cloud provisioning, CBC readiness.

For each domain the check asks DNS what the seppmail365cloud module's
``Get-SC365DeploymentInfo`` asks (seppmail365cloud.md §4) and what the 1.3.0
preview guide tells an engineer to check by hand (§10 step 2):

1. the domain's MX records, sorted by preference;
2. the SEPPmail.cloud hosts ``<domain-dashed>.gate/relay/mail.seppmail.cloud``:
   which resolve gives the mode SEPPmail.cloud has set up (gate → inline,
   inline-inbound-only when relay does not resolve; else mail → parallel);
3. the region, from the gate (inline) or mail (parallel) addresses;
4. with a tenant ID, the CBC readiness TXT record (§3.2).

The result is one `DomainCheck` per domain with one status. A failed lookup is
never read as a missing record: a timeout is ``timeout`` and a server failure
``server-failure``, whatever record was asked for. dnspython's exceptions turn
into lookup outcomes in one place, `_lookup`.

Statuses, most fundamental first (the first that applies is the status; all
that apply are in ``DomainCheck.problems``): ``timeout``, ``server-failure``,
``no-such-domain``, ``no-mx``, ``not-provisioned``, ``routing-mismatch``,
``wrong-mx``, ``region-mismatch``, ``not-cbc-ready``; else ``ok``.

Known limits: only IPv4 addresses decide the region, as in the module (§4);
the region lists are those of module 2.0.2 and may be out of date (§11 q6).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from runbook import seppmail

logger = logging.getLogger(__name__)

STATUSES = ("ok", "timeout", "server-failure", "no-such-domain", "no-mx",
            "not-provisioned", "routing-mismatch", "wrong-mx", "region-mismatch",
            "not-cbc-ready")
PROVISIONED = ("inline", "inline-inbound-only", "parallel", "none")
_REGION_ORDER = ("ch", "de", "prv", "dev")  # the module's order; last match wins (§4)
_TENANT_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
DEFAULT_TIMEOUT_S = 3.0
MAX_TIMEOUT_S = 60.0  # per lookup; a longer one only hides a dead server


@dataclass
class DomainCheck:
    """What DNS says about one domain, and whether that fits the migration plan.

    ``mx`` holds ``"pref host"`` strings sorted by preference (host lower case,
    no final dot). ``provisioned``, ``region_found`` and ``cbc_ready`` are None
    when a lookup they depend on failed or was not asked for.
    """

    domain: str
    ascii: str
    routing: str
    region: str | None
    status: str = "ok"
    message: str = ""
    mx: list[str] = field(default_factory=list)
    preferred_mx: str | None = None
    provisioned: str | None = None
    region_found: str | None = None
    cbc_ready: bool | None = None
    hosts: dict[str, list[str] | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class _Lookup:
    """One DNS question's outcome: answer, nxdomain, nodata, servfail or timeout."""

    name: str
    rdtype: str
    outcome: str
    records: tuple = ()
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ("servfail", "timeout")


def make_resolver(nameserver: str | None = None,
                  timeout: float = DEFAULT_TIMEOUT_S) -> dns.resolver.Resolver:
    """A resolver for the checks, asking `nameserver` (``HOST[:PORT]``) if given.

    HOST is an IPv4 or IPv6 literal (IPv6 with a port as ``[::1]:5353``); a host
    name is refused with ValueError, since resolving it would need the DNS we
    are about to test. Without `nameserver` the system configuration is used.
    `timeout` bounds each lookup as a whole (retries included).
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    if nameserver is None:
        resolver = dns.resolver.Resolver(configure=True)
    else:
        host, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout
    # Half the budget per try leaves room for one retry after a lost datagram.
    resolver.timeout = timeout / 2
    return resolver


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ``("127.0.0.1", 5353)``; the port defaults to 53."""
    value = text.strip()
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"not a name server address: {text!r}")
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the name server must be an IP address (HOST[:PORT]), "
                         f"not {text!r}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port number in {text!r}: {port!r}")
    return str(address), int(port)


def check_domain(domain: str, *, routing: str, region: str | None = None,
                 tenant_id: str | None = None,
                 resolver: dns.resolver.Resolver) -> DomainCheck:
    """Check one domain against the declared routing mode and region.

    `domain` may be in the form Exchange shows (``xn--mller-kva.ch``) or the
    form a person types (``müller.ch``). Raises ValueError for a domain,
    routing, region or tenant ID that is not valid; DNS trouble is a status.
    """
    check = DomainCheck(domain=domain, ascii=seppmail.ascii_domain(domain),
                        routing=_checked_routing(routing),
                        region=_checked_region(region))
    tenant_id = _checked_tenant_id(tenant_id)

    mx = _lookup(resolver, check.ascii, "MX")
    preferred = _read_mx(check, mx)

    hosts = {role: _lookup(resolver, build(check.ascii), "A")
             for role, build in (("gate", seppmail.gate_host),
                                 ("relay", seppmail.relay_host),
                                 ("mail", seppmail.mail_host))}
    _read_hosts(check, hosts)

    cbc = _lookup(resolver, seppmail.cbc_readiness_name(tenant_id), "TXT") \
        if tenant_id else None
    if cbc is not None and not cbc.failed:
        check.cbc_ready = cbc.outcome == "answer"

    failures = [lk for lk in (mx, *hosts.values(), cbc) if lk is not None and lk.failed]
    _judge(check, mx, preferred, failures, tenant_id)
    logger.info("DNS check %s (%s): %s", check.ascii, check.routing, check.status)
    return check


def check_domains(domains, **kw) -> list[DomainCheck]:
    """`check_domain` for each domain, in order; keyword arguments as there.

    Every domain is validated before the first lookup, so a typo in the list
    fails at once instead of after the domains before it were checked.
    """
    domains = list(domains)
    for domain in domains:
        seppmail.ascii_domain(domain)
    return [check_domain(domain, **kw) for domain in domains]


def to_frame(checks: list[DomainCheck]):
    """A pandas.DataFrame, one row per domain, failing ones first (else in order)."""
    import pandas as pd  # local: the CLI path and the sandbox do not need pandas

    rows = [{"domain": c.domain, "status": c.status, "preferred MX": c.preferred_mx,
             "provisioned": c.provisioned, "region": c.region_found,
             "CBC ready": c.cbc_ready, "message": c.message}
            for c in sorted(checks, key=lambda c: c.ok)]
    columns = ["domain", "status", "preferred MX", "provisioned", "region",
               "CBC ready", "message"]
    return pd.DataFrame(rows, columns=columns)


def to_json(checks: list[DomainCheck]) -> list[dict]:
    """Plain dicts (JSON-ready), one per domain, in the order checked."""
    return [dataclasses.asdict(c) for c in checks]


# --- lookups: the one boundary where dnspython's exceptions become outcomes ---

def _lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> _Lookup:
    started = time.monotonic()
    try:
        answer = resolver.resolve(dns.name.from_text(name), rdtype, search=False)
        result = _Lookup(name, rdtype, "answer", tuple(answer))
    except dns.resolver.NXDOMAIN:
        result = _Lookup(name, rdtype, "nxdomain")
    except dns.resolver.NoAnswer:
        result = _Lookup(name, rdtype, "nodata")
    except dns.exception.Timeout as exc:  # LifetimeTimeout and its parent
        result = _Lookup(name, rdtype, "timeout", detail=str(exc))
    except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
        result = _Lookup(name, rdtype, "servfail", detail=str(exc))
    except dns.exception.DNSException as exc:  # malformed replies and the like
        result = _Lookup(name, rdtype, "servfail", detail=f"{type(exc).__name__}: {exc}")
    logger.debug("DNS %s %s: %s in %.1f ms %s", name, rdtype, result.outcome,
                 (time.monotonic() - started) * 1000, result.detail)
    return result


# --- reading the answers ---

def _read_mx(check: DomainCheck, mx: _Lookup) -> list[str]:
    """Fill in the MX list; return the preferred hosts (all at the lowest value)."""
    entries = sorted((rd.preference, _host(rd.exchange)) for rd in mx.records)
    check.mx = [f"{pref} {host}" for pref, host in entries]
    preferred = [host for host in _preferred(entries) if host != "."]
    check.preferred_mx = preferred[0] if preferred else None
    return preferred


def _preferred(entries: list[tuple[int, str]]) -> list[str]:
    """The hosts at the lowest preference: mail is shared among all of them."""
    if not entries:
        return []
    best = entries[0][0]
    return [host for pref, host in entries if pref == best]


def _read_hosts(check: DomainCheck, hosts: dict[str, _Lookup]) -> None:
    check.hosts = {role: (None if lk.failed else _sorted_addresses(lk.records))
                   for role, lk in hosts.items()}
    check.provisioned = _provisioned(check.hosts)
    if check.provisioned in ("inline", "inline-inbound-only"):
        check.region_found = _region_of(check.hosts["gate"], "inline")
    elif check.provisioned == "parallel":
        check.region_found = _region_of(check.hosts["mail"], "parallel")


def _sorted_addresses(records) -> list[str]:
    return sorted((rd.address for rd in records), key=ipaddress.ip_address)


def _provisioned(hosts: dict[str, list[str] | None]) -> str | None:
    """The module's routing detection (§4 DeploymentInfo step 2); None if unknown."""
    gate, relay, mail = hosts["gate"], hosts["relay"], hosts["mail"]
    if gate is None:
        return None
    if gate:
        if relay is None:
            return None
        return "inline" if relay else "inline-inbound-only"
    if mail is None:
        return None
    return "parallel" if mail else "none"


def _region_of(addresses: list[str], routing: str) -> str | None:
    """The region holding one of `addresses`; last in the module's order wins (§4)."""
    found = {seppmail.region_of_address(a, routing) for a in addresses}
    matches = [name for name in _REGION_ORDER if name in found]
    return matches[-1] if matches else None


def _host(name: dns.name.Name) -> str:
    """Lower case, no final dot; the root (a null MX, RFC 7505) is shown as a dot."""
    return name.to_text(omit_final_dot=True).lower() if name != dns.name.root else "."


def _is_microsoft(host: str) -> bool:
    """Microsoft's MX, decided by suffix: the mx.microsoft names cannot be built."""
    return any(host == suffix or host.endswith("." + suffix)
               for suffix in seppmail.MICROSOFT_MX_SUFFIXES)


# --- judging: the status and the sentence that says what to do ---

def _judge(check: DomainCheck, mx: _Lookup, preferred: list[str],
           failures: list[_Lookup], tenant_id: str | None) -> None:
    found: list[tuple[str, str]] = []
    found += _lookup_problems(failures)
    found += _mx_problems(check, mx, preferred)
    found += _provisioning_problems(check)
    found += _cbc_problems(check, tenant_id)
    found.sort(key=lambda item: STATUSES.index(item[0]))
    check.problems = [status for status, _ in found]
    if found:
        check.status, check.message = found[0]
    else:
        check.status, check.message = "ok", _ok_message(check, tenant_id)


def _lookup_problems(failures: list[_Lookup]) -> list[tuple[str, str]]:
    problems = []
    timeouts = [lk for lk in failures if lk.outcome == "timeout"]
    servfails = [lk for lk in failures if lk.outcome == "servfail"]
    if timeouts:
        problems.append(("timeout", (
            f"no DNS answer in time for {_names(timeouts)}, so nothing is known about "
            "those records: check that the name server is reachable, or raise the "
            "timeout, and run the check again")))
    if servfails:
        problems.append(("server-failure", (
            f"the name servers failed to answer for {_names(servfails)} (SERVFAIL, "
            "refused or unreachable): check the zone's delegation and DNSSEC with the "
            "DNS provider, or try again later")))
    return problems


def _mx_problems(check: DomainCheck, mx: _Lookup,
                 preferred: list[str]) -> list[tuple[str, str]]:
    if mx.outcome == "nxdomain":
        return [("no-such-domain", (
            f"{check.ascii} does not exist in DNS (NXDOMAIN): check the spelling, "
            "and that the domain is registered and delegated"))]
    if mx.failed:
        return []
    if not preferred:
        null_mx = mx.outcome == "answer"  # RFC 7505 "0 .": accepts no mail at all
        what = "publishes a null MX (it accepts no mail)" if null_mx else \
            "has no MX record"
        return [("no-mx", (
            f"{check.ascii} {what}: publish the MX record for {check.routing} routing "
            f"({_expected_mx(check)}) at the domain's DNS provider"))]
    return _wrong_mx(check, preferred)


def _wrong_mx(check: DomainCheck, preferred: list[str]) -> list[tuple[str, str]]:
    shown = ", ".join(preferred)
    if check.routing == "inline":
        gate = seppmail.gate_host(check.ascii)
        if set(preferred) == {gate}:
            return []
        return [("wrong-mx", (
            f"the preferred MX of {check.ascii} is {shown}; for inline routing it "
            f"must be {gate} alone: change the MX record at the domain's DNS "
            "provider"))]
    if all(_is_microsoft(host) for host in preferred):
        return []
    return [("wrong-mx", (
        f"the preferred MX of {check.ascii} is {shown}; for parallel routing mail "
        "must reach Exchange Online first, through the tenant's Microsoft MX "
        "(…mail.protection.outlook.com or …mx.microsoft): change the MX record at "
        "the domain's DNS provider"))]


def _provisioning_problems(check: DomainCheck) -> list[tuple[str, str]]:
    if check.provisioned is None:
        return []
    if check.provisioned == "none":
        return [("not-provisioned", (
            f"none of {seppmail.gate_host(check.ascii)}, "
            f"{seppmail.relay_host(check.ascii)} or {seppmail.mail_host(check.ascii)} "
            "resolves, so SEPPmail.cloud has not set up this domain: add it in "
            "login.seppmail.cloud or ask SEPPmail support"))]
    mode = "inline" if check.provisioned.startswith("inline") else "parallel"
    if mode != check.routing:
        return [("routing-mismatch", (
            f"SEPPmail.cloud has {check.ascii} set up for {mode} routing "
            f"({_evidence(check)}), but {check.routing} was declared: confirm the "
            "mode the customer uses and declare it, or ask SEPPmail support to "
            "change the setup"))]
    return _region_problems(check, mode)


def _region_problems(check: DomainCheck, mode: str) -> list[tuple[str, str]]:
    if check.region is None or check.region_found == check.region:
        return []
    role = "gate" if mode == "inline" else "mail"
    addresses = ", ".join(check.hosts[role])
    if check.region_found is None:
        return [("region-mismatch", (
            f"the {role} host of {check.ascii} resolves to {addresses}, which is in "
            f"no SEPPmail.cloud region's {role} list, so region {check.region} cannot "
            "be confirmed: ask SEPPmail support which region serves the domain"))]
    return [("region-mismatch", (
        f"the {role} host of {check.ascii} resolves to {addresses}, which is "
        f"SEPPmail.cloud region {check.region_found}, but {check.region} was "
        f"declared: declare region {check.region_found}, or ask SEPPmail support"))]


def _cbc_problems(check: DomainCheck, tenant_id: str | None) -> list[tuple[str, str]]:
    if check.cbc_ready is not False:
        return []
    return [("not-cbc-ready", (
        f"there is no TXT record at {seppmail.cbc_readiness_name(tenant_id)}, so "
        f"SEPPmail.cloud is not ready for CBC for tenant {tenant_id}: in "
        "login.seppmail.cloud, Setup → General → Customers domain, use 'fetch ID' "
        "and enable 'set named transport', or ask SEPPmail support"))]


def _ok_message(check: DomainCheck, tenant_id: str | None) -> str:
    parts = [f"MX {check.preferred_mx} fits {check.routing} routing",
             f"SEPPmail.cloud has it set up as {check.provisioned}"]
    if check.region_found:
        parts.append(f"region {check.region_found}")
    if tenant_id:
        parts.append("the tenant is ready for CBC")
    text = "; ".join(parts)
    if check.provisioned == "inline-inbound-only":
        text += (f" ({seppmail.relay_host(check.ascii)} does not resolve: set up "
                 "the connectors inbound only)")
    return text


def _expected_mx(check: DomainCheck) -> str:
    if check.routing == "inline":
        return seppmail.gate_host(check.ascii)
    return "the tenant's Microsoft MX, …mail.protection.outlook.com or …mx.microsoft"


def _evidence(check: DomainCheck) -> str:
    gate = seppmail.gate_host(check.ascii)
    if check.provisioned.startswith("inline"):
        return f"{gate} resolves"
    return f"{gate} does not resolve, {seppmail.mail_host(check.ascii)} does"


def _names(lookups: list[_Lookup]) -> str:
    return ", ".join(f"{lk.name} {lk.rdtype}" for lk in lookups)


def _checked_routing(routing: str) -> str:
    if routing not in seppmail.ROUTING_MODES:
        raise ValueError(f"routing must be one of {', '.join(seppmail.ROUTING_MODES)}, "
                         f"not {routing!r}")
    return routing


def _checked_region(region: str | None) -> str | None:
    if region is not None and region not in seppmail.REGIONS:
        raise ValueError(f"region must be one of {', '.join(seppmail.REGIONS)}, "
                         f"not {region!r}")
    return region


def _checked_tenant_id(tenant_id: str | None) -> str | None:
    """A tenant ID is a GUID (§3.2, read from the OpenID token endpoint)."""
    if tenant_id is None:
        return None
    if not _TENANT_ID.match(tenant_id):
        raise ValueError(f"a tenant ID is a GUID like "
                         f"72f988bf-86f1-41af-91ab-2d7cd011db47, not {tenant_id!r}")
    return tenant_id.lower()


# --- command line: `runbook dns ...` ---

def main(argv: list[str]) -> int:
    """`runbook dns`: 0 when every domain is ok, 1 when one is not, 2 on bad input."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return int(exc.code or 0)
    try:
        resolver = make_resolver(args.nameserver, args.timeout)
        checks = check_domains(args.domains, routing=args.routing, region=args.region,
                               tenant_id=args.tenant_id, resolver=resolver)
    except (ValueError, dns.resolver.NoResolverConfiguration) as exc:
        print(f"runbook dns: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(checks), indent=2, ensure_ascii=False))
    else:
        print(_table(checks))
    return 0 if all(c.ok for c in checks) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runbook dns",
        description="Check domains' MX, SEPPmail.cloud setup and CBC readiness in DNS.")
    parser.add_argument("domains", nargs="+", metavar="DOMAIN")
    parser.add_argument("--routing", required=True, choices=seppmail.ROUTING_MODES)
    parser.add_argument("--region", choices=seppmail.REGIONS)
    parser.add_argument("--tenant-id", metavar="ID",
                        help="also check the CBC readiness TXT record for this tenant")
    parser.add_argument("--nameserver", metavar="HOST[:PORT]",
                        help="ask this server (an IP address) instead of the system's")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per domain")
    parser.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds per lookup (default {DEFAULT_TIMEOUT_S:g})")
    return parser


def _timeout(text: str) -> float:
    from runbook.params import typed_number

    try:
        return typed_number(text, "seconds", above_zero=True, at_most=MAX_TIMEOUT_S)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table(checks: list[DomainCheck]) -> str:
    frame = to_frame(checks)
    shown = frame.drop(columns=["message"]).astype(object).fillna("-")
    lines = [shown.to_string(index=False), ""]
    lines += [f"{row.domain}: {row.status}: {row.message}"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
