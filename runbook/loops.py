"""Diagnosing mail loops that last after a migration (notebook 06, step 5).

The procedure's special case (seppmail365cloud.md §10, caveats): loops that
last after a correct migration mean the recipient's tenant is on
SEPPmail.cloud too and has not moved to CBC, so SEPPmail.cloud cannot tell the
two tenants apart and hands the message back to the sender's tenant. Before
blaming the recipient the diagnosis rules out this tenant, so it runs in
named phases, each one function:

1. `check_local`: this tenant's own configuration: SEPPmail connectors and
   rules older than CBC still in place (classified by `runbook.inventory`),
   the CBC connectors missing or carrying another certificate (§3.1, §3.2),
   and the DNS checks of its own domains (MX for the routing mode, §4);
2. `find_loops`: the message trace (exchange-objects.md §11): a message seen
   `LOOP_PASSES` times or more for one recipient is looping; its detail
   events name the connectors it passed (their `Data`, §11 "Detail"), which
   says whether it goes round through the SEPPmail connectors; grouped by
   recipient domain;
3. `check_recipients`: per looping domain, whether SEPPmail.cloud serves it
   (its MX and gate/relay/mail hosts, as `runbook.dns` checks them, §4), its
   tenant ID (`runbook.openid`, §3.2) and whether that tenant is CBC-ready
   (the readiness TXT record, §3.2);
4. `Diagnosis`: the verdict, whose side must act and how, and the audit
   event (`diagnosis`, shown by `runbook.report`).

For a notebook context, notebook 06 runs the phases one cell each
(`request`, `local_findings`, `trace_loops`, `recipient_verdicts`, each with a
table), `run(ctx, ...)` does all four at once, and step 5 calls
`when_looping` after its wait. Input errors are
`runbook.params.ParameterError`; DNS and OpenID trouble never raises, it is a
verdict of its own ("unknown") that says what to retry.

Known limits: the trace is read in one query of at most `RESULT_SIZE` rows
(the newest; `TraceLoops.truncated` says when the cut was hit), because the
facade does not page (§11 paging needs -StartingRecipientAddress); a message
id is filtered here, not in the query, for the same reason. Detail look-ups
are capped (`DETAILS_PER_DOMAIN`, `MAX_DETAILS`) to stay well inside the
trace's 100 queries per 5 minutes (§11).
"""

from __future__ import annotations

import html
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pandas as pd

from runbook import dns, inventory, openid, seppmail, tables
from runbook.mailflow import LOOP_PASSES
from runbook.params import ParameterError

log = logging.getLogger(__name__)

RESULT_SIZE = 5000                 # §11: ResultSize 1-5000
MAX_WINDOW_HOURS = 240.0           # §11: 10 days per query
MIN_WINDOW_HOURS = 0.01
DEFAULT_WINDOW_HOURS = 24.0
SINCE_MARGIN = timedelta(minutes=1)
MAX_RECIPIENTS = 20                # one trace query each
DETAILS_PER_DOMAIN = 3
MAX_DETAILS = 20
HOP_LIMIT_CODE = "5.4.14"          # "Hop count exceeded - possible mail loop"

# Verdicts per recipient domain, and who must act on each.
WITHOUT_CBC = "recipient-without-cbc"
CBC_READY = "recipient-cbc-ready"
NO_TENANT = "recipient-no-microsoft-tenant"
NOT_SEPPMAIL = "not-on-seppmail"
UNKNOWN = "unknown"
ACTS = {WITHOUT_CBC: "the recipient's side",
        CBC_READY: "the recipient's side and SEPPmail support",
        NO_TENANT: "SEPPmail support",
        NOT_SEPPMAIL: "this tenant",
        UNKNOWN: "nobody yet: repeat the look-ups"}

_SERVED = ("inline", "inline-inbound-only", "parallel")
_LOOKUP_FAILED = ("timeout", "server-failure")
_MX_STATUSES = ("wrong-mx", "no-mx")
_CONNECTOR_NAME = re.compile(r"(?:InboundConnectorData|TenantOutboundConnectorCustomData)"
                             r"=(?:[^;]*;)*?Name=(?P<name>[^;]+)")
_SENT_TO = re.compile(r"Message sent to (?P<host>\S+)")
_ADDRESS = re.compile(r"^[^@\s<>\"]+@(?P<domain>[^@\s<>\"]+)$")


# --- parameters ---------------------------------------------------------------


def window(window_hours: float = DEFAULT_WINDOW_HOURS, *, since: datetime | None = None,
           now: datetime | None = None) -> tuple[datetime, datetime]:
    """The trace window: the last `window_hours`, or from `since` (step 5) to now.

    A minute is added at the end for clock skew between here and Exchange, and
    before `since`: a message sent just before it can loop on after it, and
    its first passes belong to the count.
    """
    if isinstance(window_hours, bool) or not isinstance(window_hours, (int, float)) \
            or not MIN_WINDOW_HOURS <= window_hours <= MAX_WINDOW_HOURS:
        raise ParameterError("window_hours", window_hours,
                             f"a number of hours from {MIN_WINDOW_HOURS:g} to "
                             f"{MAX_WINDOW_HOURS:g} (the trace answers 10 days a query)")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    end = now + timedelta(minutes=1)
    if since is not None:
        start = max(since.astimezone(timezone.utc) - SINCE_MARGIN,
                    end - timedelta(hours=MAX_WINDOW_HOURS))
        return start, end
    return now - timedelta(hours=float(window_hours)), end


def checked_recipients(recipients) -> tuple[str, ...]:
    """Recipient addresses, lower case; a list (or tuple), at most MAX_RECIPIENTS."""
    if recipients is None or recipients == "":
        return ()
    if isinstance(recipients, str) or not isinstance(recipients, (list, tuple)):
        raise ParameterError("recipients", recipients,
                             'a list of addresses, e.g. ["info@adatum.ch"], or []')
    if len(recipients) > MAX_RECIPIENTS:
        raise ParameterError("recipients", recipients,
                             f"at most {MAX_RECIPIENTS} addresses (one trace query each)")
    checked = []
    for address in recipients:
        match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
        try:
            domain = seppmail.ascii_domain(match.group("domain")) if match else None
        except ValueError:
            domain = None
        if domain is None:
            raise ParameterError("recipients", address, "an e-mail address such as "
                                 "info@adatum.ch")
        checked.append(f"{address.strip().rsplit('@', 1)[0]}@{domain}".lower())
    return tuple(dict.fromkeys(checked))


def checked_message_id(message_id) -> str:
    """A message id as the trace shows it, ``<...>``; empty for none."""
    if not isinstance(message_id, str):
        raise ParameterError("message_id", message_id, "text: a Message-ID such as "
                             "<SB000002CD.1.OU@northwindtraders.ch>, or empty")
    text = message_id.strip()
    if not text:
        return ""
    if any(c.isspace() for c in text) or len(text) > 500:
        raise ParameterError("message_id", message_id, "one Message-ID without spaces")
    return text if text.startswith("<") else f"<{text.strip('<>')}>"


# --- phase 1: this tenant ------------------------------------------------------


@dataclass
class LocalFinding:
    """Something in this tenant that can itself make mail loop or bounce."""

    kind: str        # connector, rule, mx, dns
    name: str
    enabled: bool | None
    message: str

    @property
    def short(self) -> str:
        return f"{self.kind} {self.name}"


def check_local(exo, params, *, tenant_id: str, resolver) -> list[LocalFinding]:
    """This tenant's own configuration: connectors first, then MX, rules, DNS."""
    items = inventory.take(exo).seppmail_items()
    findings = _leftovers(items, "connector")
    findings += _cbc_connectors(items, params, tenant_id)

    checks = dns.check_domains(params.domains, routing=params.routing,
                               region=params.region, tenant_id=tenant_id or None,
                               resolver=resolver)
    findings += [_dns_finding(c) for c in checks if c.status in _MX_STATUSES]
    findings += _leftovers(items, "rule")
    findings += [_dns_finding(c) for c in checks
                 if not c.ok and c.status not in _MX_STATUSES]
    log.info("local check: %d findings", len(findings))
    return findings


def _leftovers(items: list[inventory.Item], what: str) -> list[LocalFinding]:
    """Pre-CBC, legacy-named, appliance and leftover objects; enabled ones first."""
    old = [i for i in items if i.cls != inventory.CBC
           and (i.kind == "transport_rule") == (what == "rule")]
    old.sort(key=lambda i: (not _enabled(i.obj), i.kind, i.name.lower()))
    return [LocalFinding(what, i.name, _enabled(i.obj), _leftover_message(i))
            for i in old]


def _leftover_message(item: inventory.Item) -> str:
    label = inventory.KIND_LABELS[item.kind]
    state = {True: "enabled", False: "disabled", None: "in place"}[_enabled(item.obj)]
    where = ("in the Exchange admin center (its name holds '/' or '\\', which "
             "PowerShell can no longer remove)") if item.portal_only else \
        "with step 3 (03-cleanup)"
    return (f"the old SEPPmail {label} '{item.name}' is still here and {state} "
            f"({item.reason}): remove it {where}")


def _cbc_connectors(items: list[inventory.Item], params,
                    tenant_id: str) -> list[LocalFinding]:
    """The routing mode's CBC connectors exist, are enabled, name this tenant (§3.1)."""
    findings = []
    for direction in ("inbound", "outbound"):
        name = seppmail.connector_name(direction, params.routing)
        found = [i for i in items if i.cls == inventory.CBC
                 and i.kind == f"{direction}_connector"
                 and i.name.lower() == name.lower()]
        if not found:
            findings.append(LocalFinding("connector", name, None, (
                f"the CBC {direction} connector '{name}' does not exist: the migration "
                "is not finished; run step 4 (04-configure)")))
            continue
        connector = found[0]
        if _enabled(connector.obj) is False:
            findings.append(LocalFinding("connector", name, False, (
                f"the CBC {direction} connector '{name}' is disabled: enable it")))
        if direction == "inbound" and tenant_id:
            findings += _certificate_finding(connector, tenant_id, params.region)
    return findings


def _certificate_finding(connector: inventory.Item, tenant_id: str,
                         region: str) -> list[LocalFinding]:
    expected = seppmail.certificate_name(tenant_id, region)
    actual = str(connector.obj.get("TlsSenderCertificateName") or "")
    if actual.lower() == expected:
        return []
    return [LocalFinding("connector", connector.name, _enabled(connector.obj), (
        f"the CBC inbound connector '{connector.name}' expects the certificate "
        f"'{actual}', not this tenant's '{expected}' (§3.1): recreate it with step 4"))]


def _dns_finding(check: dns.DomainCheck) -> LocalFinding:
    kind = "mx" if check.status in _MX_STATUSES else "dns"
    return LocalFinding(kind, check.ascii, None, f"{check.ascii}: {check.message}")


def _enabled(obj: dict) -> bool | None:
    if "Enabled" in obj:
        return bool(obj["Enabled"])
    if "State" in obj:
        return str(obj["State"]).lower() == "enabled"
    return None


# --- phase 2: the message trace -------------------------------------------------


@dataclass
class LoopingMessage:
    """One message to one recipient that the trace shows again and again."""

    message_id: str
    recipient: str
    passes: int
    trace_id: str
    first_seen: datetime | None
    last_seen: datetime | None
    failed_rows: int = 0
    connectors: list[str] = field(default_factory=list)
    seppmail_sends: int = 0
    hop_limit: bool = False          # a FAIL event with 5.4.14, from the detail
    inspected: bool = False

    @property
    def through_seppmail(self) -> bool:
        return self.seppmail_sends > 0 or any(_is_seppmail(n) for n in self.connectors)


@dataclass
class LoopGroup:
    """The looping messages to one recipient domain."""

    domain: str
    messages: list[LoopingMessage]

    @property
    def passes(self) -> int:
        return max(m.passes for m in self.messages)

    @property
    def recipients(self) -> list[str]:
        return sorted({m.recipient for m in self.messages})

    @property
    def connectors(self) -> list[str]:
        return sorted({n for m in self.messages for n in m.connectors}, key=str.lower)

    @property
    def through_seppmail(self) -> bool | None:
        """Whether inspected messages passed SEPPmail connectors (None: none was)."""
        inspected = [m for m in self.messages if m.inspected]
        return any(m.through_seppmail for m in inspected) if inspected else None

    @property
    def failed_messages(self) -> int:
        """Messages with a Failed row: on a loop, Exchange's hop limit ends them."""
        return sum(m.failed_rows > 0 for m in self.messages)

    @property
    def hop_limit_seen(self) -> bool:
        """An inspected message's detail shows the hop limit failure (5.4.14)."""
        return any(m.hop_limit for m in self.messages)

    @property
    def sample(self) -> LoopingMessage:
        return self.messages[0]


@dataclass
class TraceLoops:
    """What the trace showed in the window."""

    start: datetime
    end: datetime
    rows: int
    messages: int
    truncated: bool
    groups: list[LoopGroup]

    @property
    def domains(self) -> list[str]:
        return [g.domain for g in self.groups]

    def summary(self) -> str:
        """One sentence: what the trace showed, loops or none."""
        window = _window_text(self)
        if not self.groups:
            return (f"No mail loop: none of the {self.messages} messages in the trace "
                    f"{window} was seen {LOOP_PASSES} times or more")
        looping = sum(len(g.messages) for g in self.groups)
        per_domain = ", ".join(f"{g.domain} (up to {g.passes} passes)"
                               for g in self.groups)
        return (f"{looping} of {self.messages} messages in the trace {window} loop, "
                f"to {per_domain}")


def find_loops(exo, start: datetime, end: datetime, *, recipients=(),
               message_id: str = "", min_passes: int = LOOP_PASSES) -> TraceLoops:
    """Messages seen `min_passes` times or more, grouped by recipient domain.

    Groups come with the most passes first; within one, the newest message
    first. The newest messages of each group (at most DETAILS_PER_DOMAIN, and
    MAX_DETAILS in all) are read in detail for the connectors they passed.
    """
    recipients = checked_recipients(recipients)
    message_id = checked_message_id(message_id)
    rows, truncated = _trace_rows(exo, start, end, recipients)
    if message_id:
        rows = [r for r in rows
                if str(r.get("MessageId", "")).lower() == message_id.lower()]

    passes: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        key = (str(row.get("MessageId", "")),
               str(row.get("RecipientAddress", "")).lower())
        passes[key].append(row)
    looping = [_looping(key, found) for key, found in passes.items()
               if len(found) >= min_passes]

    groups = _group(looping)
    _inspect(exo, groups)
    log.info("trace %s..%s: %d rows, %d messages, %d looping domains", start, end,
             len(rows), len(passes), len(groups))
    return TraceLoops(start=start, end=end, rows=len(rows), messages=len(passes),
                      truncated=truncated, groups=groups)


def _trace_rows(exo, start, end, recipients) -> tuple[list[dict], bool]:
    if not recipients:
        rows = exo.message_trace(start, end, result_size=RESULT_SIZE)
        return rows, len(rows) >= RESULT_SIZE
    rows, truncated = [], False
    for recipient in recipients:
        found = exo.message_trace(start, end, recipient=recipient,
                                  result_size=RESULT_SIZE)
        truncated = truncated or len(found) >= RESULT_SIZE
        rows += found
    return rows, truncated


def _looping(key: tuple[str, str], rows: list[dict]) -> LoopingMessage:
    times = sorted(t for t in (_received(r) for r in rows) if t is not None)
    newest = max(rows, key=lambda r: _received(r) or datetime.min.replace(
        tzinfo=timezone.utc))
    return LoopingMessage(message_id=key[0], recipient=key[1], passes=len(rows),
                          trace_id=str(newest.get("MessageTraceId", "")),
                          first_seen=times[0] if times else None,
                          last_seen=times[-1] if times else None,
                          failed_rows=sum(str(r.get("Status")) == "Failed" for r in rows))


def _group(looping: list[LoopingMessage]) -> list[LoopGroup]:
    by_domain: dict[str, list[LoopingMessage]] = defaultdict(list)
    for message in looping:
        by_domain[message.recipient.rsplit("@", 1)[-1]].append(message)
    groups = []
    for domain, messages in by_domain.items():
        messages.sort(key=lambda m: m.last_seen or datetime.min.replace(
            tzinfo=timezone.utc), reverse=True)
        groups.append(LoopGroup(domain, messages))
    groups.sort(key=lambda g: (-g.passes, -len(g.messages), g.domain))
    return groups


def _inspect(exo, groups: list[LoopGroup]) -> None:
    """Read the detail events of the newest messages: connectors and the hop limit."""
    budget = MAX_DETAILS
    for group in groups:
        for message in group.messages[:DETAILS_PER_DOMAIN]:
            if budget <= 0:
                return
            budget -= 1
            events = exo.message_trace_detail(message.trace_id, message.recipient)
            _read_events(message, events)


def _read_events(message: LoopingMessage, events: list[dict]) -> None:
    message.inspected = True
    names = []
    for event in events:
        data, detail = str(event.get("Data") or ""), str(event.get("Detail") or "")
        kind = str(event.get("Event") or "").upper()
        name = _CONNECTOR_NAME.search(data)
        if name:
            names.append(name.group("name").strip())
        host = _SENT_TO.search(detail) if kind == "SEND" else None
        seppmail_name = bool(name) and _is_seppmail(name.group("name"))
        if kind == "SEND" and (seppmail_name or (
                host and host.group("host").lower().endswith(".seppmail.cloud"))):
            message.seppmail_sends += 1
        if kind == "FAIL" and HOP_LIMIT_CODE in detail:
            message.hop_limit = True
    message.connectors = sorted(set(names), key=str.lower)


def _is_seppmail(connector_name: str) -> bool:
    item = inventory.classify("inbound_connector", {"Name": connector_name.strip()})
    return item.cls in inventory.SEPPMAIL_CLASSES


def _received(row: dict) -> datetime | None:
    value = row.get("Received")
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


# --- phase 3: the recipients -----------------------------------------------------


@dataclass
class RecipientVerdict:
    """Whether a looping recipient domain is the SEPPmail.cloud special case."""

    domain: str
    verdict: str
    message: str
    on_seppmail: bool | None = None
    provisioned: str | None = None
    region: str | None = None
    mx: str | None = None
    tenant_id: str | None = None
    cbc_ready: bool | None = None
    cbc_record: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def acts(self) -> str:
        return ACTS[self.verdict]


def check_recipients(loops: TraceLoops, *, resolver,
                     discovery: openid.Discovery | None) -> list[RecipientVerdict]:
    """`check_recipient` for every looping domain, in the order of `loops.groups`."""
    return [check_recipient(g.domain, resolver=resolver, discovery=discovery,
                            sample=g.sample.message_id,
                            through_seppmail=g.through_seppmail)
            for g in loops.groups]


def check_recipient(domain: str, *, resolver, discovery: openid.Discovery | None,
                    sample: str = "", through_seppmail: bool | None = None
                    ) -> RecipientVerdict:
    """SEPPmail.cloud service (DNS, §4), tenant ID (§3.2) and CBC readiness (§3.2)."""
    tenant, tenant_problem, no_tenant = _tenant(domain, discovery)

    # check_domain judges against a declared routing mode; a foreign domain has
    # none we know, so only its facts are read, never its status.
    check = dns.check_domain(domain, routing="inline", tenant_id=tenant,
                             resolver=resolver)
    served = _served(check)
    found = RecipientVerdict(domain=check.ascii, verdict=UNKNOWN, message="",
                             on_seppmail=served, provisioned=check.provisioned,
                             region=check.region_found, mx=check.preferred_mx,
                             tenant_id=tenant, cbc_ready=check.cbc_ready,
                             cbc_record=seppmail.cbc_readiness_name(tenant)
                             if tenant else None)
    found.problems = [p for p in check.problems if p in _LOOKUP_FAILED]
    if tenant_problem:
        found.problems.append(tenant_problem)
    found.verdict, found.message = _recipient_verdict(found, check, no_tenant, sample,
                                                      through_seppmail)
    log.info("recipient %s: %s", found.domain, found.verdict)
    return found


def _tenant(domain: str, discovery) -> tuple[str | None, str | None, bool]:
    """(tenant id, what went wrong, whether the service said no tenant holds it)."""
    if discovery is None:
        return None, ("tenant ID not looked up: no OpenID discovery service is known "
                      "for this session (the sandbox child announces none)"), False
    try:
        return discovery.tenant_id(domain), None, False
    except openid.TenantNotFound as exc:
        return None, str(exc), True
    except openid.OpenIDError as exc:
        return None, str(exc), False


def _served(check: dns.DomainCheck) -> bool | None:
    """SEPPmail.cloud serves the domain: its hosts resolve or its MX is theirs (§4)."""
    mx_there = any(entry.split()[-1].endswith(".seppmail.cloud") for entry in check.mx)
    if check.provisioned in _SERVED or mx_there:
        return True
    if check.provisioned is None:
        return None
    return False


def _recipient_verdict(found: RecipientVerdict, check: dns.DomainCheck, no_tenant: bool,
                       sample: str, through_seppmail: bool | None) -> tuple[str, str]:
    domain = found.domain
    if found.on_seppmail is None:
        return UNKNOWN, (f"{domain}: DNS did not answer for its SEPPmail.cloud hosts "
                         f"({check.message}); run the diagnosis again")
    if not found.on_seppmail:
        return NOT_SEPPMAIL, _not_seppmail_message(found, sample, through_seppmail)
    served = _service_text(found)
    if no_tenant:
        return NO_TENANT, (
            f"{domain} is served by SEPPmail.cloud ({served}) but no Microsoft 365 "
            "tenant holds it, so certificate-based connectors cannot tell its mail "
            f"apart: SEPPmail support must look at the loop (message {sample})")
    if found.tenant_id is None or found.cbc_ready is None:
        what = found.problems[-1] if found.problems else "the CBC readiness record"
        return UNKNOWN, (f"{domain} is served by SEPPmail.cloud ({served}), but its "
                         f"CBC readiness is not known: {what}; run the diagnosis again")
    if found.cbc_ready is False:
        return WITHOUT_CBC, (
            f"{domain} is served by SEPPmail.cloud ({served}) and its tenant "
            f"{found.tenant_id} is not ready for CBC (no TXT record at "
            f"{found.cbc_record}). SEPPmail.cloud cannot tell that tenant from this "
            "one, so mail to it comes back here. The recipient's side must act: "
            "its administrator, or SEPPmail support for them, moves tenant "
            f"{found.tenant_id} to certificate-based connectors (fetch ID and set "
            "named transport in login.seppmail.cloud, then the CBC connectors). "
            "Nothing needs to change in this tenant.")
    return CBC_READY, (
        f"{domain} is served by SEPPmail.cloud ({served}) and its tenant "
        f"{found.tenant_id} is ready for CBC, so this is not the known special case: "
        "ask the recipient whether its connectors were moved to CBC yet, and give "
        f"SEPPmail support message {sample}")


def _not_seppmail_message(found: RecipientVerdict, sample: str,
                          through_seppmail: bool | None) -> str:
    via = "" if through_seppmail is False else " through the SEPPmail connectors"
    return (f"{found.domain} is not served by SEPPmail.cloud (MX {found.mx or 'none'}, "
            "no gate, relay or mail host), so this is not the SEPPmail.cloud special "
            f"case: the loop{via} starts here. Read the trace detail of message "
            f"{sample} to see where it turns back, and check this tenant's outbound "
            f"connectors and rules for {found.domain}")


def _service_text(found: RecipientVerdict) -> str:
    parts = [f"MX {found.mx}" if found.mx else "no MX"]
    if found.provisioned in _SERVED:
        parts.append(f"set up for {found.provisioned}")
    if found.region:
        parts.append(f"region {found.region}")
    return ", ".join(parts)


# --- phase 4: the diagnosis -------------------------------------------------------


@dataclass
class Diagnosis:
    """The local findings, the loops and the recipients' verdicts, and what they mean."""

    local: list[LocalFinding]
    loops: TraceLoops
    recipients: list[RecipientVerdict]

    @property
    def looping(self) -> bool:
        return bool(self.loops.groups)

    @property
    def cause(self) -> str:
        """One line: where the trouble is."""
        if self.local:
            return f"this tenant: {self.local[0].short}"
        if not self.looping:
            return "no loop"
        return "; ".join(f"{r.domain}: {_SHORT[r.verdict]}" for r in self.recipients)

    def verdict(self) -> tuple[str, str]:
        """(status, message) for `ctx.conclude`: failed on a loop or a local finding."""
        window = _window_text(self.loops)
        if self.local:
            return "failed", self._local_message(window)
        if not self.looping:
            cut = (f" The trace returned its maximum of {RESULT_SIZE} rows, so older "
                   "messages were not seen: narrow the window or name recipients."
                   if self.loops.truncated else "")
            return "succeeded", (f"No mail loop: {self.loops.messages} messages in the "
                                 f"trace {window}, none seen {LOOP_PASSES} times or "
                                 f"more; this tenant's configuration is in order.{cut}")
        parts = [f"Mail to {', '.join(self.loops.domains)} loops ({window})."]
        parts += [r.message for r in self.recipients]
        return "failed", " ".join(parts)

    def _local_message(self, window: str) -> str:
        first = self.local[0]
        more = len(self.local) - 1
        text = (f"This tenant's own configuration comes first: {first.message}."
                + (f" {more} more finding{'s' if more != 1 else ''} in the table." if more
                   else ""))
        if self.looping:
            text += (f" Mail to {', '.join(self.loops.domains)} loops ({window}); fix "
                     "this tenant first, then run the diagnosis again.")
        else:
            text += f" No mail loop in the trace {window}."
        return text

    def event_data(self) -> dict:
        """The `diagnosis` event: flat facts first, one entry per domain after."""
        status, message = self.verdict()
        return {
            "loop": self.looping, "cause": self.cause, "status": status,
            "message": message,
            "window": f"{_iso(self.loops.start)} to {_iso(self.loops.end)}",
            "trace_rows": self.loops.rows, "messages": self.loops.messages,
            "truncated": self.loops.truncated,
            "local": [f.message for f in self.local],
            "domains": [_domain_data(g, r) for g, r in
                        zip(self.loops.groups, self.recipients)],
        }

    def record(self, record, *, step: str) -> dict | None:
        """Write the `diagnosis` event into the run record (None: no record)."""
        if record is None:
            return None
        return record.event("diagnosis", step=step, **self.event_data())

    def record_step(self, ctx) -> dict | None:
        """Record for a step context, once: a verdict cell run again after the step
        concluded (its record sealed) only shows the verdict again."""
        if ctx.outcome:
            return None
        return self.record(ctx.record, step=ctx.step)

    def frame(self) -> pd.DataFrame:
        return recipient_frame(self.recipients, self.loops)

    def tables(self) -> list:
        """The three phases' tables, as notebook 06 shows them one by one."""
        return [local_table(self.local), loop_table(self.loops),
                recipient_table(self.recipients)]


_SHORT = {WITHOUT_CBC: "on SEPPmail.cloud without CBC",
          CBC_READY: "on SEPPmail.cloud, CBC-ready",
          NO_TENANT: "on SEPPmail.cloud, no Microsoft 365 tenant",
          NOT_SEPPMAIL: "not on SEPPmail.cloud", UNKNOWN: "not known"}


def _domain_data(group: LoopGroup, found: RecipientVerdict) -> dict:
    return {"domain": found.domain, "verdict": found.verdict,
            "finding": _SHORT[found.verdict], "acts": found.acts,
            "on_seppmail": found.on_seppmail, "provisioned": found.provisioned,
            "region": found.region, "mx": found.mx, "tenant_id": found.tenant_id,
            "cbc_ready": found.cbc_ready, "messages": len(group.messages),
            "passes": group.passes, "failed_messages": group.failed_messages,
            "hop_limit_seen": group.hop_limit_seen,
            "connectors": group.connectors, "sample_message": group.sample.message_id}


def _window_text(loops: TraceLoops) -> str:
    return f"from {_iso(loops.start)} to {_iso(loops.end)}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# --- tables for the notebook -------------------------------------------------------
# A `result` column colours the rows (`tables.style_checks`): every finding and
# every loop is an error; a recipient whose look-ups failed is only a warning,
# because nothing is known against it yet.


def local_frame(findings: list[LocalFinding]) -> pd.DataFrame:
    rows = [{"result": "error", "kind": f.kind, "name": f.name, "enabled": f.enabled,
             "finding": f.message} for f in findings]
    return pd.DataFrame(rows, columns=["result", "kind", "name", "enabled", "finding"])


def loop_frame(loops: TraceLoops) -> pd.DataFrame:
    rows = [{"result": "error", "recipient domain": g.domain,
             "messages": len(g.messages), "passes": g.passes,
             "failed": g.failed_messages, "hop limit seen": g.hop_limit_seen,
             "through SEPPmail": g.through_seppmail,
             "connectors": ", ".join(g.connectors),
             "recipients": ", ".join(g.recipients),
             "newest message": g.sample.message_id} for g in loops.groups]
    return pd.DataFrame(rows, columns=["result", "recipient domain", "messages",
                                       "passes", "failed", "hop limit seen",
                                       "through SEPPmail", "connectors", "recipients",
                                       "newest message"])


def recipient_frame(verdicts: list[RecipientVerdict],
                    loops: TraceLoops | None = None) -> pd.DataFrame:
    rows = [{"result": "warning" if v.verdict == UNKNOWN else "error",
             "domain": v.domain, "verdict": _SHORT[v.verdict], "who acts": v.acts,
             "on SEPPmail.cloud": v.on_seppmail, "MX": v.mx, "region": v.region,
             "tenant ID": v.tenant_id, "CBC ready": v.cbc_ready, "message": v.message}
            for v in verdicts]
    return pd.DataFrame(rows, columns=["result", "domain", "verdict", "who acts",
                                       "on SEPPmail.cloud", "MX", "region", "tenant ID",
                                       "CBC ready", "message"])


def local_table(findings: list[LocalFinding]):
    """Phase 1 as a styled table whose caption says what it found."""
    count = len(findings)
    caption = (f"{count} finding{'s' if count != 1 else ''} in this tenant's own "
               "configuration" if count else
               "Nothing in this tenant's own configuration makes mail loop")
    return _captioned(tables.style_checks(local_frame(findings)), caption)


def loop_table(loops: TraceLoops):
    return _captioned(tables.style_checks(loop_frame(loops)), loops.summary())


def recipient_table(verdicts: list[RecipientVerdict]):
    caption = (", ".join(f"{v.domain}: {_SHORT[v.verdict]}" for v in verdicts)
               or "No looping recipient domain to look up")
    return _captioned(tables.style_checks(recipient_frame(verdicts)), caption)


def _captioned(styled, caption: str):
    # The caption is markup in the HTML; the domains in it come from the trace.
    return styled.set_caption(html.escape(caption))


# --- for a notebook context ----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What to diagnose: a trace window, optionally some recipients or one message.

    The window is fixed only when the trace is read (`window()`), so a cell run
    again later reads up to that moment.
    """

    window_hours: float = DEFAULT_WINDOW_HOURS
    recipients: tuple[str, ...] = ()
    message_id: str = ""
    since: datetime | None = None

    def window(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        return window(self.window_hours, since=self.since, now=now)


def request(window_hours: float = DEFAULT_WINDOW_HOURS, recipients=(),
            message_id: str = "", *, since: datetime | None = None) -> Request:
    """The diagnosis's own parameters, checked before anything runs (ParameterError)."""
    window(window_hours, since=since)
    return Request(float(window_hours), checked_recipients(recipients),
                   checked_message_id(message_id), since)


def discovery_for(session, timeout: float = openid.DEFAULT_TIMEOUT_S
                  ) -> openid.Discovery | None:
    """The discovery service for this session: the sandbox child's own, announced in
    its hello as ``openid``, or Microsoft's for a real tenant. A sandbox child that
    announces none gets None: its look-ups must never leave the machine."""
    announced = session.hello.get("openid")
    if announced:
        return openid.Discovery(announced, timeout=timeout)
    if session.host == "sandbox":
        return None
    return openid.Discovery(openid.MODULE_BASE_URL, timeout=timeout)


def local_findings(ctx) -> list[LocalFinding]:
    """Phase 1 for a step context."""
    return check_local(ctx.exo, ctx.params, resolver=ctx.resolver(),
                       tenant_id=str(ctx.connection.get("TenantID") or ""))


def trace_loops(ctx, asked: Request) -> TraceLoops:
    """Phase 2 for a step context."""
    start, end = asked.window()
    return find_loops(ctx.exo, start, end, recipients=asked.recipients,
                      message_id=asked.message_id)


def recipient_verdicts(ctx, found: TraceLoops,
                       discovery: openid.Discovery | None = None
                       ) -> list[RecipientVerdict]:
    """Phase 3 for a step context; `discovery` defaults to `discovery_for`."""
    return check_recipients(found, resolver=ctx.resolver(),
                            discovery=discovery or discovery_for(ctx.session))


def step_verdict(flow_verdict: tuple[str, str],
                 diagnosis: Diagnosis | None) -> tuple[str, str]:
    """Step 5's verdict: its own, or the diagnosis's once that found something."""
    if diagnosis is None or not (diagnosis.looping or diagnosis.local):
        return flow_verdict
    return diagnosis.verdict()


def when_looping(ctx, status, since: datetime | None) -> Diagnosis | None:
    """Step 5: the diagnosis of a loop its wait saw (`mailflow.FlowStatus.looping`),
    over the trace since the new connectors were made; None without a loop."""
    if not status.looping:
        return None
    log.info("step 5 saw loops to %s: diagnosing", ", ".join(sorted(status.looping)))
    return run(ctx, since=since)


def run(ctx, *, window_hours: float = DEFAULT_WINDOW_HOURS, recipients=(),
        message_id: str = "", since: datetime | None = None,
        discovery: openid.Discovery | None = None) -> Diagnosis:
    """The four phases for a step context; records the `diagnosis` event.

    `since` (step 5: when the new connectors were made) replaces the window's
    start; `discovery` defaults to `discovery_for(ctx.session)`.
    """
    asked = request(window_hours, recipients, message_id, since=since)

    local = local_findings(ctx)
    found = trace_loops(ctx, asked)
    verdicts = recipient_verdicts(ctx, found, discovery)

    diagnosis = Diagnosis(local, found, verdicts)
    diagnosis.record(ctx.record, step=ctx.step)
    return diagnosis
