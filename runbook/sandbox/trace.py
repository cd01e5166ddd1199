"""The sandbox's message trace: Get-MessageTraceV2 and Get-MessageTraceDetailV2.

Where a real tenant shows that new configuration is in effect is its mail
flow, so that is where the sandbox models the delay (design.md "The
sandbox"): a change made at T is in effect from T + `propagation_delay_s`.
`effective_connectors(state, at)` rebuilds the connectors and rules in effect
at a moment by undoing, from the change log, every change not yet in effect.

Traffic is derived, never stored: `state["traffic"]` defines flows (one
inbound and one outbound test message per interval) and every message is
routed through what was in effect at its own time, so a trace taken after a
migration shows old messages through old connectors and new ones through new
connectors. A row appears only `trace_latency_s` after its message
(exchange-objects.md §11 "Latency": 5-10 minutes on a tenant).

The routing model, and where its facts come from:
- inbound mail enters through the MX (state DNS); at a SEPPmail.cloud gate
  host it reaches Exchange from the gate's address (seppmail365cloud.md §4);
- SEPPmail.cloud presents the tenant certificate `<tenantId>.<region>
  .seppmail.cloud` once it is prepared for CBC (readiness TXT, §3.2), else its
  shared `*.<region>.seppmail.cloud` one (§3.3);
- a Partner inbound connector applies to mail whose sender domain its
  SenderDomains cover and, with RestrictDomainsToCertificate, rejects such
  mail without the named certificate (550 5.7.51 TenantInboundAttribution)
  [I, from Exchange's documented connector semantics]; an OnPremises one
  applies to mail from its addresses or certificate;
- transport rules run in Priority order (exchange-objects.md §4) and
  RouteMessageOutboundConnector sends through the named connector; other
  external mail takes a non-scoped connector whose RecipientDomains match,
  or goes direct;
- mail through a `[SEPPmail.cloud]` connector to a domain whose tenant is on
  SEPPmail.cloud without CBC (`state["other_tenants"]`, cbc false) comes back
  through the SEPPmail connectors until Exchange's hop limit fails it: the
  lasting loop of seppmail365cloud.md §10.

Not modelled: spam verdicts (SCL is 1 for external, -1 for internal mail),
message bodies and attachments; a rule condition the model does not know
never matches, so such a rule never acts on the test messages.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import ipaddress
import logging
import math
import re
from datetime import datetime, timedelta, timezone

from .exo import RULE_CONDITIONS, exo_cmdlet
from .registry import CmdletError
from .state import parse_time

log = logging.getLogger(__name__)

KINDS = ("inbound_connectors", "outbound_connectors", "transport_rules")
MAX_HOPS = 6  # passes of a looping message before Exchange fails it [I]
HOP_SECONDS = 2.0  # between two passes of a looping message, unless traffic.hop_s


def hop_seconds(state: dict) -> float:
    """Seconds between two passes of a looping message in this tenant's trace."""
    return float((state.get("traffic") or {}).get("hop_s") or HOP_SECONDS)
DIRECT_MX_IP = "198.51.100.10"  # a partner's MX (RFC 5737 documentation range)
DEFAULT_WINDOW = timedelta(hours=48)  # §11: last 48 hours without dates
MAX_WINDOW = timedelta(days=10)  # §11: 10 days per query
MAX_HISTORY = timedelta(days=90)  # §11: 90 days of history
TRUNCATED = "There are more results, use the following command to get more."

# seppmail365cloud.md §4: which region an address of a SEPPmail.cloud host is in.
_REGION_ADDRESSES = {
    "ch": {"86.119.35.35", "217.20.196.81", "86.119.38.33", "217.20.196.83",
           "217.20.196.82", "86.119.37.4"},
    "de": {"49.12.23.112", "167.233.8.136", "162.55.72.221", "162.55.72.222",
           "162.55.155.177", "49.12.22.120"},
    "prv": {"49.12.21.237", "116.202.109.112", "49.12.100.186"},
}


# --- what was in effect when -----------------------------------------------------

def _effective_times(state: dict) -> list[datetime]:
    delay = timedelta(seconds=float(state.get("propagation_delay_s") or 0))
    return [parse_time(c["at"]) + delay for c in state.get("changes", [])]


def effective_connectors(state: dict, at: datetime) -> dict:
    """The connectors and rules in effect at `at`.

    Returns {"inbound_connectors", "outbound_connectors", "transport_rules"}
    (full objects). A change recorded at T takes effect at T +
    state["propagation_delay_s"]; later ones are undone from their `before`.
    """
    config = {kind: copy.deepcopy(state.get(kind, [])) for kind in KINDS}
    times = _effective_times(state)
    restored: set[str] = set()
    for change, effective in reversed(list(zip(state.get("changes", []), times))):
        if effective <= at or change.get("kind") not in config:
            continue
        objects = config[change["kind"]]
        after, before = change.get("after"), change.get("before")
        if after is not None:
            objects[:] = [o for o in objects if o.get("Guid") != after.get("Guid")]
        if before is not None:
            objects.append(copy.deepcopy(before))
            restored.add(before.get("Guid"))
    _renumber(config["transport_rules"], restored)
    return config


def _renumber(rules: list[dict], restored: set[str]) -> None:
    """Priorities 0…n-1 again after undoing rule changes.

    The log keeps only the changed rule, not the rules its insert or removal
    shifted (exchange-objects.md §9 "Priority"), so a restored rule goes
    before the rule that now holds its old number; a moved rule is placed the
    same way, which is exact for one move and close for several.
    """
    rules.sort(key=lambda r: (r["Priority"], r.get("Guid") not in restored))
    for index, rule in enumerate(rules):
        rule["Priority"] = index


# --- DNS and addresses ------------------------------------------------------------

def _records(state: dict, name: str, rtype: str) -> list[str]:
    wanted = name.lower().rstrip(".") + "."
    return [r["value"] for r in state.get("dns", {}).get("records", [])
            if r["name"].lower() == wanted and r["type"] == rtype]


def _address(state: dict, host: str) -> str | None:
    found = _records(state, host, "A")
    return found[0] if found else None


def _mx_host(state: dict, domain: str) -> str | None:
    found = sorted(_records(state, domain, "MX"),
                   key=lambda v: int(v.split()[0]) if v.split()[0].isdigit() else 0)
    return found[0].split()[-1].rstrip(".") if found else None


def _region_of(address: str | None) -> str | None:
    for region, addresses in _REGION_ADDRESSES.items():
        if address in addresses:
            return region
    return None


def _presented_certificate(state: dict, region: str) -> str:
    """SEPPmail.cloud's certificate towards this tenant (§3.2, §3.3)."""
    from .scenarios import cbc_record_name

    tenant_id = state["tenant"]["tenant_id"]
    if _records(state, cbc_record_name(tenant_id), "TXT"):
        return f"{tenant_id}.{region}.seppmail.cloud"
    return f"*.{region}.seppmail.cloud"


def _domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower()


def _domain_covered(domain: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return domain == pattern or domain.endswith("." + pattern)


def _certificate_matches(configured: str | None, presented: str | None) -> bool:
    if not configured or not presented:
        return False
    configured, presented = configured.lower(), presented.lower()
    if configured == presented:
        return True
    # A configured wildcard covers names below it; an exact name only itself.
    return configured.startswith("*.") and presented.endswith(configured[1:])


def _ip_in(address: str, ranges: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for item in ranges:
        try:
            if "-" in item:
                first, last = (ipaddress.ip_address(x.strip()) for x in item.split("-"))
                if first <= ip <= last:
                    return True
            elif ip in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


# --- connectors -------------------------------------------------------------------

def _sender_domains(connector: dict) -> list[str]:
    return [re.sub(r"(?i)^smtp:|;\d+$", "", d) for d in connector["SenderDomains"]]


def _inbound_attribution(config: dict, message: dict) -> tuple[dict | None, str | None]:
    """The inbound connector a message is attributed to, or a rejection reason."""
    domain = _domain_of(message["sender"])
    for connector in config["inbound_connectors"]:
        if not connector["Enabled"]:
            continue
        by_ip = _ip_in(message["from_ip"], connector["SenderIPAddresses"])
        by_cert = _certificate_matches(connector["TlsSenderCertificateName"],
                                       message.get("certificate"))
        if connector["ConnectorType"] == "OnPremises":
            if by_ip or by_cert:
                return connector, None
            continue
        if not any(_domain_covered(domain, d) for d in _sender_domains(connector)):
            continue
        if connector["RestrictDomainsToCertificate"] and not by_cert:
            return None, _reject(connector)
        if connector["RestrictDomainsToIPAddresses"] and not by_ip:
            return None, _reject(connector)
        return connector, None
    return None, None


def _reject(connector: dict) -> str:
    return ("Reason: [{LED=550 5.7.51 TenantInboundAttribution; There is a partner"
            " connector configured that matched the message's recipient domain."
            " The connector had either the RestrictDomainsToIPAddresses or"
            " RestrictDomainsToCertificate set"
            f" [Name={connector['Name']}]}}]")


def _outbound_connector(config: dict, name: str | None, recipient: str) -> dict | None:
    """The connector a rule named, else the best non-scoped RecipientDomains match."""
    if name is not None:
        for connector in config["outbound_connectors"]:
            if connector["Name"].lower() == name.lower() and connector["Enabled"]:
                return connector
        return None
    domain = _domain_of(recipient)
    best, best_length = None, -1
    for connector in config["outbound_connectors"]:
        if not connector["Enabled"] or connector["IsTransportRuleScoped"]:
            continue
        for pattern in connector["RecipientDomains"]:
            length = 0 if pattern == "*" else len(pattern)
            if _domain_covered(domain, pattern) and length > best_length:
                best, best_length = connector, length
    return best


def _is_seppmail(connector: dict) -> bool:
    return connector["Name"].lower().startswith("[seppmail.cloud]") or any(
        h.lower().endswith(".seppmail.cloud") for h in connector["SmartHosts"])


# --- transport rules ------------------------------------------------------------------

def _header_has(message: dict, header: str, words, *, regex: bool) -> bool:
    value = message["headers"].get((header or "").lower())
    if value is None:
        return False
    for word in words or []:
        if regex:
            try:
                if re.search(word, value, re.IGNORECASE):
                    return True
            except re.error:
                continue
        elif word.lower() in value.lower():
            return True
    return False


def _condition(rule: dict, name: str, prefix: str, message: dict) -> bool | None:
    """True/False for one set condition; None when the model does not know it."""
    value = rule.get(prefix + name)
    sender, recipient = message["sender"].lower(), message["recipient"].lower()
    if name == "FromScope":
        return value == message["from_scope"]
    if name == "SentToScope":
        scope = message["to_scope"]
        return value == scope or (value.startswith("External")
                                  and scope == "NotInOrganization")
    if name in ("RecipientDomainIs", "SenderDomainIs"):
        domain = _domain_of(recipient if name.startswith("Recipient") else sender)
        return any(_domain_covered(domain, d) for d in value)
    if name in ("From", "SentTo"):
        address = sender if name == "From" else recipient
        return address in {v.lower() for v in value}
    if name == "HeaderContainsMessageHeader":
        return _header_has(message, value, rule.get(prefix + "HeaderContainsWords"),
                           regex=False)
    if name == "HeaderMatchesMessageHeader":
        return _header_has(message, value, rule.get(prefix + "HeaderMatchesPatterns"),
                           regex=True)
    if name == "SCLOver":
        return message["scl"] > int(value)
    if name == "MessageTypeMatches":
        return False  # test messages are plain mail, never OOF etc.
    if name in ("SubjectContainsWords", "SubjectOrBodyContainsWords"):
        return any(w.lower() in message["subject"].lower() for w in value)
    if name == "FromAddressContainsWords":
        return any(w.lower() in sender for w in value)
    if name == "AnyOfRecipientAddressContainsWords":
        return any(w.lower() in recipient for w in value)
    if name == "SenderIpRanges":
        return _ip_in(message["from_ip"], value)
    if name == "AttachmentSizeOver":
        return False  # test messages carry no attachments
    return None


# Evaluated together with the header name they belong to.
_PAIRED = ("HeaderContainsWords", "HeaderMatchesPatterns")


def _rule_matches(rule: dict, message: dict) -> bool:
    names = [n for n in RULE_CONDITIONS if n not in _PAIRED]
    for name in names:
        if rule.get(name) not in (None, []):
            verdict = _condition(rule, name, "", message)
            if not verdict:
                return False
    for name in names:
        if rule.get("ExceptIf" + name) not in (None, []):
            verdict = _condition(rule, name, "ExceptIf", message)
            if verdict is None or verdict:
                return False
    return True


def _in_force(rule: dict, at: datetime) -> bool:
    if rule["State"] != "Enabled" or rule["Mode"] != "Enforce":
        return False
    if rule.get("ActivationDate") and parse_time(rule["ActivationDate"]) > at:
        return False
    return not (rule.get("ExpiryDate") and parse_time(rule["ExpiryDate"]) <= at)


def apply_rules(config: dict, message: dict, at: datetime) -> str | None:
    """Run the rules on `message` (headers edited in place); returns the
    connector name a rule routes through, or None."""
    route = None
    for rule in config["transport_rules"]:
        if not _in_force(rule, at) or not _rule_matches(rule, message):
            continue
        if rule.get("RouteMessageOutboundConnector"):
            route = rule["RouteMessageOutboundConnector"]
        if rule.get("SetHeaderName") and rule.get("SetHeaderValue") is not None:
            message["headers"][rule["SetHeaderName"].lower()] = rule["SetHeaderValue"]
        if rule.get("RemoveHeader"):
            message["headers"].pop(rule["RemoveHeader"].lower(), None)
        if rule.get("StopRuleProcessing"):
            break
    return route


# --- routing one message ----------------------------------------------------------

def _event(offset: float, event: str, detail: str, data: str) -> dict:
    return {"offset": offset, "Event": event, "Detail": detail, "Data": data}


def _receive(offset: float, connector: dict | None, from_ip: str) -> dict:
    if connector is None:
        data = f"S:ClientIP={from_ip}" if from_ip else "S:Submission=Mailbox"
    else:
        data = (f"S:InboundConnectorData=Name={connector['Name']};"
                f"ConnectorType={connector['ConnectorType']};S:ClientIP={from_ip}")
    return _event(offset, "RECEIVE", "Message received", data)


def _send(state: dict, offset: float, connector: dict | None, host: str,
          address: str) -> dict:
    data = "S:ExternalSendLatency=0.9"
    if connector is not None:
        data = ("S:Microsoft.Exchange.Hygiene.TenantOutboundConnectorCustomData="
                f"TenantId={state['tenant']['tenant_id']};Name={connector['Name']};"
                f"ConnectorType={connector['ConnectorType']};" + data)
    return _event(offset, "SEND",
                  f"Message sent to {host} at {address} using TLS1.2 with AES256",
                  data)


class _Router:
    """Routes the test messages of one flow under one effective configuration."""

    def __init__(self, state: dict, config: dict, at: datetime):
        self.state, self.config, self.at = state, config, at
        accepted = {d["DomainName"].lower() for d in state["accepted_domains"]}
        self.accepted = accepted
        self.loop_domains = {t["domain"].lower() for t in state.get("other_tenants", [])
                             if not t.get("cbc", True)}

    def route(self, flow: dict) -> list[dict]:
        """The passes (trace rows) of one message: offset, IPs, status, events."""
        message = {
            "sender": flow["sender"], "recipient": flow["recipient"],
            "subject": flow["subject"], "from_ip": flow.get("from_ip", ""),
            "headers": {"content-type": "text/plain; charset=utf-8"},
            "from_scope": self._scope(flow["sender"]),
            "to_scope": self._scope(flow["recipient"]), "certificate": None,
        }
        message["scl"] = -1 if message["from_scope"] == "InOrganization" else 1
        if message["to_scope"] == "InOrganization" and \
                message["from_scope"] == "NotInOrganization":
            self._enter_from_internet(message)
        passes: list[dict] = []
        self._pass(message, passes, 0.0, hops=0)
        return passes

    def _scope(self, address: str) -> str:
        return ("InOrganization" if _domain_of(address) in self.accepted
                else "NotInOrganization")

    def _enter_from_internet(self, message: dict) -> None:
        """Inbound mail arrives through the recipient domain's MX (§4)."""
        mx = _mx_host(self.state, _domain_of(message["recipient"])) or ""
        if mx.lower().endswith(".gate.seppmail.cloud"):
            self._from_seppmail(message, mx)

    def _from_seppmail(self, message: dict, host: str) -> None:
        address = _address(self.state, host) or ""
        region = _region_of(address) or "ch"
        message["from_ip"] = address
        message["certificate"] = _presented_certificate(self.state, region)
        message["headers"]["x-sm-incoming"] = "yes"

    def _pass(self, message: dict, passes: list, offset: float, hops: int) -> None:
        row = {"offset": offset, "from_ip": message["from_ip"], "to_ip": "",
               "status": "Delivered", "events": []}
        passes.append(row)
        connector, rejection = (None, None)
        if message["from_scope"] == "NotInOrganization" or message["certificate"]:
            connector, rejection = _inbound_attribution(self.config, message)
        row["events"].append(_receive(offset, connector, message["from_ip"]))
        if rejection:
            row["status"] = "Failed"
            row["events"].append(_event(offset + 0.5, "FAIL", rejection, ""))
            return
        route = apply_rules(self.config, message, self.at)
        external = message["to_scope"] == "NotInOrganization"
        if route is None and not external:
            row["events"].append(_event(offset + 1, "DELIVER",
                                        "The message was successfully delivered.",
                                        "S:DeliveryPriority=Normal"))
            return
        outbound = _outbound_connector(self.config, route, message["recipient"])
        self._send_out(message, passes, row, outbound, offset, hops)

    def _send_out(self, message, passes, row, outbound, offset, hops) -> None:
        if outbound is None:
            row["to_ip"] = DIRECT_MX_IP
            row["events"].append(_send(self.state, offset + 1, None,
                                       f"mx.{_domain_of(message['recipient'])}",
                                       DIRECT_MX_IP))
            return
        host = outbound["SmartHosts"][0] if outbound["SmartHosts"] else \
            f"mx.{_domain_of(message['recipient'])}"
        address = _address(self.state, host) if outbound["SmartHosts"] else DIRECT_MX_IP
        if address is None:
            row["status"] = "Failed"
            row["events"].append(_event(
                offset + 1, "FAIL",
                "Reason: [{LED=554 5.4.4 SMTPSEND.DNS.NonExistentDomain;"
                f" nonexistent domain}};{{MSG=}};{{FQDN={host}}}]", ""))
            return
        row["to_ip"] = address
        row["events"].append(_send(self.state, offset + 1, outbound, host, address))
        if _is_seppmail(outbound):
            self._back_from_seppmail(message, passes, outbound, address, offset, hops)

    def _back_from_seppmail(self, message, passes, outbound, address, offset, hops):
        """After SEPPmail.cloud: inbound mail returns; looping mail returns too."""
        returns_inbound = message["to_scope"] == "InOrganization"
        loops = _domain_of(message["recipient"]) in self.loop_domains
        if not (returns_inbound or loops):
            return
        if loops and hops + 1 >= MAX_HOPS:
            passes[-1]["status"] = "Failed"
            passes[-1]["events"].append(_event(
                offset + 2, "FAIL", "Reason: [{LED=554 5.4.14 Hop count exceeded -"
                " possible mail loop ATTR34}]", ""))
            return
        region = _region_of(address) or "ch"
        message["from_ip"] = address
        message["certificate"] = (_presented_certificate(self.state, region)
                                  if returns_inbound else f"*.{region}.seppmail.cloud")
        if returns_inbound:
            message["headers"]["x-sm-incoming"] = "yes"
        else:
            # The recipient's tenant has no CBC, so SEPPmail.cloud cannot tell
            # the tenants apart and the message comes back to this tenant's
            # SEPPmail connector, whose rules send it out again.
            message["certificate"] = self._seppmail_inbound_certificate() \
                or message["certificate"]
        self._pass(message, passes, offset + hop_seconds(self.state), hops + 1)

    def _seppmail_inbound_certificate(self) -> str | None:
        for connector in self.config["inbound_connectors"]:
            if connector["Enabled"] and \
                    connector["Name"].lower().startswith("[seppmail.cloud]"):
                return connector["TlsSenderCertificateName"]
        return None


# --- the traffic ------------------------------------------------------------------

def _trace_id(state: dict, flow: int, tick: int, hop: int) -> str:
    """A GUID that encodes its message, so the detail cmdlet can find it again."""
    head = hashlib.sha1(state["tenant"]["tenant_id"].encode()).hexdigest()
    return f"{head[:8]}-{head[8:12]}-{flow:04x}-{hop:04x}-{tick:012x}"


def _decode_trace_id(state: dict, trace_id: str) -> tuple[int, int, int] | None:
    head = hashlib.sha1(state["tenant"]["tenant_id"].encode()).hexdigest()
    match = re.fullmatch(r"([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})"
                         r"-([0-9a-f]{12})", (trace_id or "").strip().lower())
    if not match or match.group(1) + match.group(2) != head[:12]:
        return None
    return int(match.group(3), 16), int(match.group(5), 16), int(match.group(4), 16)


def _message_id(flow: dict, index: int, tick: int) -> str:
    host = _domain_of(flow["sender"])
    return f"<SB{tick:08X}.{index}.{flow['direction'][:2].upper()}@{host}>"


class Traffic:
    """The derived messages of a tenant, routed per effective configuration."""

    def __init__(self, state: dict):
        self.state = state
        traffic = state.get("traffic") or {}
        self.flows = traffic.get("flows", [])
        self.start = parse_time(traffic["start"]) if traffic.get("start") else None
        self.interval = float(traffic.get("interval_s") or 60)
        self.latency = float(traffic.get("trace_latency_s") or 0)
        self.times = _effective_times(state)
        self._routes: dict[tuple[int, int], tuple[list, dict]] = {}

    def sent_at(self, index: int, tick: int) -> datetime:
        offset = self.interval * (tick + index / max(1, len(self.flows)))
        return self.start + timedelta(seconds=offset)

    def passes(self, index: int, tick: int) -> list[dict]:
        at = self.sent_at(index, tick)
        epoch = bisect.bisect_right(self.times, at)
        key = (index, epoch)
        if key not in self._routes:
            config = effective_connectors(self.state, at)
            self._routes[key] = (_Router(self.state, config, at).route(
                self.flows[index]), config)
        return self._routes[key][0]

    def ticks(self, low: datetime, high: datetime) -> range:
        """Ticks whose messages were sent within [low - loop time, high]."""
        if self.start is None or not self.flows or high < self.start:
            return range(0)
        slack = MAX_HOPS * hop_seconds(self.state)
        first = math.floor(((low - self.start).total_seconds() - slack)
                           / self.interval) - 1
        last = math.floor((high - self.start).total_seconds() / self.interval)
        return range(max(0, first), last + 1)

    def rows(self, low: datetime, high: datetime, now: datetime):
        """Every visible row received within [low, high], newest first."""
        visible_until = now - timedelta(seconds=self.latency)
        found = []
        for tick in self.ticks(low, min(high, visible_until)):
            for index, flow in enumerate(self.flows):
                sent = self.sent_at(index, tick)
                for hop, one in enumerate(self.passes(index, tick)):
                    received = sent + timedelta(seconds=one["offset"])
                    if low <= received <= high and received <= visible_until:
                        found.append(self._row(flow, index, tick, hop, one, received))
        # §11 order: Received descending, then RecipientAddress.
        found.sort(key=lambda r: r["RecipientAddress"].lower())
        found.sort(key=lambda r: r["_at"], reverse=True)
        return found

    def _row(self, flow, index, tick, hop, one, received) -> dict:
        return {
            "MessageTraceId": _trace_id(self.state, index, tick, hop),
            "MessageId": _message_id(flow, index, tick),
            "Received": received.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
            "SenderAddress": flow["sender"], "RecipientAddress": flow["recipient"],
            "FromIP": one["from_ip"], "ToIP": one["to_ip"],
            "Subject": flow["subject"], "Status": one["status"],
            "Size": int(flow.get("size", 20000)), "_at": received,
        }


# --- the cmdlets ------------------------------------------------------------------

def _window(tenant, p: dict) -> tuple[datetime, datetime]:
    """§11 limits: 10 days per query, 90 days back, last 48 hours by default."""
    now = tenant.now()
    start, end = p.get("StartDate"), p.get("EndDate")
    if (start is None) != (end is None):
        raise CmdletError("StartDate and EndDate must be used together.",
                          category="InvalidArgument", error_id="InvalidDateRange",
                          target="StartDate" if start is None else "EndDate")
    if start is None:
        return now - DEFAULT_WINDOW, now
    if end < start:
        raise CmdletError("The EndDate can't be earlier than the StartDate.",
                          category="InvalidArgument", error_id="InvalidDateRange",
                          target="EndDate")
    if end - start > MAX_WINDOW:
        raise CmdletError("The date range can't be more than 10 days; narrow"
                          " StartDate and EndDate.", category="InvalidArgument",
                          error_id="InvalidDateRange", target="StartDate")
    if start < now - MAX_HISTORY:
        raise CmdletError("The StartDate can't be older than 90 days.",
                          category="InvalidArgument", error_id="InvalidDateRange",
                          target="StartDate")
    return start, end


def _result_size(value) -> int:
    size = 1000 if value is None else value
    if not 1 <= size <= 5000:
        raise CmdletError(
            f"Cannot validate argument on parameter 'ResultSize'. The {size} argument"
            " is outside the range 1 to 5000.", category="InvalidData",
            error_id="ParameterArgumentValidationError", target="ResultSize")
    return size


def _wanted(row: dict, p: dict) -> bool:
    for key in ("RecipientAddress", "SenderAddress", "MessageId", "Status",
                "FromIP", "ToIP"):
        values = p.get(key)
        if values and row[key].lower() not in {v.lower() for v in values}:
            return False
    if p.get("MessageTraceId") and row["MessageTraceId"] != p["MessageTraceId"].lower():
        return False
    return True


def _after_page_start(row: dict, p: dict, end: datetime) -> bool:
    """-StartingRecipientAddress: the next page starts at the boundary row (§11)."""
    starting = p.get("StartingRecipientAddress")
    if not starting or row["_at"] < end:
        return True
    return row["RecipientAddress"].lower() >= starting.lower()


@exo_cmdlet("Get-MessageTraceV2",
            {"StartDate": "datetime", "EndDate": "datetime",
             "RecipientAddress": "strings", "SenderAddress": "strings",
             "MessageId": "strings", "MessageTraceId": "string", "Status": "strings",
             "FromIP": "strings", "ToIP": "strings", "ResultSize": "int",
             "StartingRecipientAddress": "string", "Subject": "string",
             "SubjectFilterType": "enum:Contains|EndsWith|StartsWith"})
def get_message_trace_v2(tenant, p):
    """Rows of §11: no connector field, Received descending, ResultSize cut
    with the truncation warning, rows only after the trace latency."""
    start, end = _window(tenant, p)
    size = _result_size(p.get("ResultSize"))
    found = []
    for row in Traffic(tenant.state).rows(start, end, tenant.now()):
        if _wanted(row, p) and _subject_ok(row, p) and _after_page_start(row, p, end):
            found.append(row)
            if len(found) > size:
                tenant.warn(TRUNCATED)
                found = found[:size]
                break
    return [{k: v for k, v in row.items() if k != "_at"} for row in found]


def _subject_ok(row: dict, p: dict) -> bool:
    subject = p.get("Subject")
    if not subject:
        return True
    mode = p.get("SubjectFilterType") or "Contains"
    text, wanted = row["Subject"].lower(), subject.lower()
    return {"Contains": wanted in text, "StartsWith": text.startswith(wanted),
            "EndsWith": text.endswith(wanted)}[mode]


@exo_cmdlet("Get-MessageTraceDetailV2",
            {"MessageTraceId": "string", "RecipientAddress": "string",
             "Event": "strings", "Action": "strings", "StartDate": "datetime",
             "EndDate": "datetime"},
            required=("MessageTraceId", "RecipientAddress"))
def get_message_trace_detail_v2(tenant, p):
    """The events of one row (§11 Detail): RECEIVE, SEND, DELIVER, FAIL, with
    the connector named in Data. A looping message lists every round so far."""
    traffic = Traffic(tenant.state)
    decoded = _decode_trace_id(tenant.state, p["MessageTraceId"])
    if decoded is None or decoded[0] >= len(traffic.flows):
        return []
    index, tick, hop = decoded
    flow = traffic.flows[index]
    if flow["recipient"].lower() != p["RecipientAddress"].strip().lower():
        return []
    passes = traffic.passes(index, tick)
    sent = traffic.sent_at(index, tick)
    visible_until = tenant.now() - timedelta(seconds=traffic.latency)
    if hop >= len(passes) or sent + timedelta(seconds=passes[hop]["offset"]) \
            > visible_until:
        return []
    first = 0 if _is_loop(passes) else hop
    events = [e for one in passes[first:hop + 1] for e in one["events"]]
    wanted = {e.upper() for e in p.get("Event") or []}
    return [_detail_row(tenant, flow, index, tick, hop, sent, e) for e in events
            if not wanted or e["Event"] in wanted]


def _is_loop(passes: list[dict]) -> bool:
    return any(e["Event"] == "FAIL" and "5.4.14" in e["Detail"]
               for one in passes for e in one["events"]) or len(passes) > 2


def _detail_row(tenant, flow, index, tick, hop, sent, event) -> dict:
    at = sent + timedelta(seconds=event["offset"])
    return {
        "Organization": tenant.state["tenant"]["initial_domain"],
        "MessageId": _message_id(flow, index, tick),
        "MessageTraceId": _trace_id(tenant.state, index, tick, hop),
        "Date": at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "Event": event["Event"], "Action": None, "Detail": event["Detail"],
        "Data": event["Data"], "SenderAddress": flow["sender"],
        "RecipientAddress": flow["recipient"],
    }
