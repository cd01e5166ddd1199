"""A small authoritative DNS server on loopback: the sandbox tenant's DNS.

The runbook's DNS checks (`runbook.dns`) run against this server in every test
and in the sandbox, so the resolver path is real DNS over UDP (and TCP when an
answer does not fit in a UDP datagram). Records come from the sandbox state
(``state["dns"]["records"]``, see docs/internals.md), one dict each::

    {"name": "contoso.ch.", "type": "MX", "ttl": 300,
     "value": "10 contoso-ch.gate.seppmail.cloud."}

``value`` is zone-file rdata text; names are absolute (a missing final dot is
added); ``ttl`` defaults to 300. Unicode names are served in their IDNA
(punycode) form, encoded with IDNA 2003 as Python's ``idna`` codec and
`runbook.seppmail.ascii_domain` do, so both sides agree on the wire name.

What it answers (decided for the sandbox, where this server stands in for the
whole of DNS as a tenant sees it):

- data for the name and type: NOERROR with the records, AA set; a CNAME is
  followed inside the served data;
- the name exists, but not with that type (also an empty non-terminal such as
  ``gate.seppmail.cloud.`` when ``contoso-ch.gate.seppmail.cloud.`` exists):
  NOERROR without answers (NODATA) and the zone's SOA in the authority section;
- the name does not exist: NXDOMAIN and the SOA. By default the server is
  authoritative for the root zone, so a domain nobody configured is
  NXDOMAIN, as the Internet answers for an unregistered domain;
- with ``zones=[...]`` it serves only those zones and answers REFUSED for names
  outside them, as a real authoritative-only server does;
- class other than IN: REFUSED; opcode other than QUERY: NOTIMP; a message
  with no or several questions: FORMERR.

Test knobs, by record type: ``"SERVFAIL"`` makes every query for that exact
name answer SERVFAIL; ``"TIMEOUT"`` makes the server drop them, so a client
times out. Neither needs ``value`` or ``ttl``.

Not modelled: wildcards, DNSSEC, delegations (NS below a zone apex are served
as plain data), zone transfers, EDNS options beyond the payload size.

Only loopback addresses may be served: the sandbox never listens on a network
a tenant or a colleague could reach.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

logger = logging.getLogger(__name__)

KNOBS = ("SERVFAIL", "TIMEOUT")
DEFAULT_TTL = 300
# Placeholder SOA/NS targets under `.invalid` (RFC 6761): never resolvable.
_SOA_TEXT = "ns.sandbox.invalid. hostmaster.sandbox.invalid. 1 3600 600 86400 300"
_NS_TEXT = "ns.sandbox.invalid."
_CNAME_DEPTH = 8  # a CNAME chain longer than this is answered as far as it got
_POLL_S = 0.05  # how often the server threads look at the stop flag
_TCP_CLIENT_TIMEOUT_S = 2.0
_TCP_MAX_MESSAGES = 16  # per connection; one slow client cannot hold TCP long
_UDP_PLAIN_MAX = 512  # RFC 1035 limit without EDNS
_BIND_ATTEMPTS = 20  # to find a port free for both UDP and TCP


@dataclass
class _Data:
    """Everything the answering code needs, built once and then only read."""

    zones: list[dns.zone.Zone]
    servfail: set[dns.name.Name] = field(default_factory=set)
    timeout: set[dns.name.Name] = field(default_factory=set)
    # Every name that exists, including empty non-terminals (RFC 8020).
    existing: set[dns.name.Name] = field(default_factory=set)


def start_dns_server(records: list[dict], host: str = "127.0.0.1", port: int = 0,
                     *, zones: list[str] | None = None) -> "DnsServer":
    """Start serving `records` on `host`:`port` (0: a free port) in daemon threads.

    Raises ValueError for a malformed record, a record outside `zones`, or a
    host that is not a loopback address literal; OSError when the port is taken.
    """
    family = _loopback_family(host)
    data = _build(records, zones)
    server = DnsServer(data, family, host, port)
    server._start()
    return server


class DnsServer:
    """A running server. Use as a context manager, or call `stop()`."""

    def __init__(self, data: _Data, family: int, host: str, port: int) -> None:
        self._data = data
        self._family = family
        self._requested = (host, port)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.address: tuple[str, int] = (host, port)
        # (name, type) of the latest queries received, for tests and debugging.
        self.queries: collections.deque[tuple[str, str]] = collections.deque(maxlen=1000)

    @property
    def nameserver(self) -> str:
        """``HOST:PORT`` (``[HOST]:PORT`` for IPv6), as `runbook.dns` takes it."""
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self, timeout: float = 2.0) -> None:
        """Stop answering and wait (at most `timeout` s per thread) for the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        logger.info("sandbox DNS server %s stopped", self.nameserver)

    def __enter__(self) -> "DnsServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self) -> None:
        self._udp, self._tcp = _bind_pair(self._family, *self._requested)
        self.address = self._udp.getsockname()[:2]
        for target, name in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            thread = threading.Thread(target=target, name=f"sandbox-dns-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("sandbox DNS server listening on %s", self.nameserver)

    def _serve_udp(self) -> None:
        sock = self._udp
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            reply = self._answer(wire, transport="udp")
            if reply is not None:
                sock.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._serve_tcp_connection(conn)

    def _serve_tcp_connection(self, conn: socket.socket) -> None:
        conn.settimeout(_TCP_CLIENT_TIMEOUT_S)
        for _ in range(_TCP_MAX_MESSAGES):
            try:
                length = _recv_exactly(conn, 2)
                wire = _recv_exactly(conn, int.from_bytes(length, "big"))
            except (OSError, EOFError):
                return
            reply = self._answer(wire, transport="tcp")
            if reply is None:
                continue  # a TIMEOUT knob: say nothing, keep the connection
            try:
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
            except OSError:
                return

    def _answer(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException as exc:
            logger.debug("unparseable query dropped: %s", exc)
            return None
        try:
            response = respond(self._data, query, self.queries)
        except Exception:  # a bug here must not kill the server thread
            logger.exception("sandbox DNS server failed to answer %s", query.question)
            response = _rcode(dns.message.make_response(query), dns.rcode.SERVFAIL)
        if response is None:
            return None
        if transport == "tcp":
            return response.to_wire()
        limit = max(query.payload, _UDP_PLAIN_MAX) if query.edns >= 0 else _UDP_PLAIN_MAX
        # Too big for UDP: send what fits with TC set; the client retries on TCP.
        return response.to_wire(max_size=limit, prefer_truncation=True)


def respond(data: _Data, query: dns.message.Message,
            log: collections.deque | None = None) -> dns.message.Message | None:
    """The response to `query`, or None to stay silent (a TIMEOUT knob)."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if query.opcode() != dns.opcode.QUERY:
        return _rcode(response, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return _rcode(response, dns.rcode.FORMERR)
    question = query.question[0]
    qname = question.name
    if log is not None:
        log.append((qname.to_text().lower(), dns.rdatatype.to_text(question.rdtype)))
    logger.debug("query %s %s", qname, dns.rdatatype.to_text(question.rdtype))

    if qname in data.timeout:
        return None
    if qname in data.servfail:
        return _rcode(response, dns.rcode.SERVFAIL)
    if question.rdclass != dns.rdataclass.IN:
        return _rcode(response, dns.rcode.REFUSED)
    zone = _zone_for(data, qname)
    if zone is None:
        return _rcode(response, dns.rcode.REFUSED)

    _fill_answer(data, zone, response, qname, question.rdtype)
    if not response.answer:
        if qname not in data.existing:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_negative_soa(zone))
    return response


def _fill_answer(data: _Data, zone: dns.zone.Zone, response: dns.message.Message,
                 qname: dns.name.Name, rdtype: int) -> None:
    """Answer records for qname/rdtype, following CNAMEs inside the served data."""
    for _ in range(_CNAME_DEPTH):
        node = zone.get_node(qname)
        if node is None:
            return
        found = [rds for rds in node.rdatasets
                 if rdtype == dns.rdatatype.ANY or rds.rdtype == rdtype]
        for rds in found:
            response.answer.append(_rrset(qname, rds))
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if found or cname is None:
            return
        response.answer.append(_rrset(qname, cname))
        qname = cname[0].target
        zone = _zone_for(data, qname)
        if zone is None or qname in data.servfail or qname in data.timeout:
            return


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def _negative_soa(zone: dns.zone.Zone) -> dns.rrset.RRset:
    """The SOA for a negative answer, its TTL capped at the SOA minimum (RFC 2308)."""
    soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    rrset = _rrset(zone.origin, soa)
    rrset.ttl = min(soa.ttl, soa[0].minimum)
    return rrset


def _rcode(response: dns.message.Message, rcode: int) -> dns.message.Message:
    response.set_rcode(rcode)
    return response


def _zone_for(data: _Data, name: dns.name.Name) -> dns.zone.Zone | None:
    """The most specific served zone that contains `name`."""
    best = None
    for zone in data.zones:
        if name.is_subdomain(zone.origin):
            if best is None or len(zone.origin) > len(best.origin):
                best = zone
    return best


def _build(records: list[dict], zones: list[str] | None) -> _Data:
    origins = [_absolute(z) for z in zones] if zones else [dns.name.root]
    data = _Data(zones=[dns.zone.Zone(origin, relativize=False) for origin in origins])
    for index, record in enumerate(records):
        _add_record(data, index, record)
    for zone in data.zones:
        _ensure_apex(zone)
        for name in zone.nodes:
            data.existing.update(_self_and_parents(name, zone.origin))
    return data


def _add_record(data: _Data, index: int, record: dict) -> None:
    if not isinstance(record, dict) or "name" not in record or "type" not in record:
        raise ValueError(f"DNS record {index} needs 'name' and 'type': {record!r}")
    name = _absolute(record["name"])
    kind = str(record["type"]).upper()
    zone = _zone_for(data, name)
    if zone is None:
        raise ValueError(f"DNS record {index} ({name}) is outside the served zones")
    if kind in KNOBS:
        (data.servfail if kind == "SERVFAIL" else data.timeout).add(name)
        return
    rdata = _rdata(index, kind, record)
    ttl = int(record.get("ttl", DEFAULT_TTL))
    node = zone.find_node(name, create=True)
    node.find_rdataset(dns.rdataclass.IN, rdata.rdtype, create=True).add(rdata, ttl)


def _rdata(index: int, kind: str, record: dict) -> dns.rdata.Rdata:
    if "value" not in record:
        raise ValueError(f"DNS record {index} ({record['name']} {kind}) has no 'value'")
    try:
        rdtype = dns.rdatatype.from_text(kind)
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(record["value"]),
                                   origin=dns.name.root, relativize=False,
                                   idna_codec=dns.name.IDNA_2003)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(f"DNS record {index} ({record['name']} {kind} "
                         f"{record['value']!r}) is not valid: {exc}") from exc


def _ensure_apex(zone: dns.zone.Zone) -> None:
    """Give each zone the SOA and NS an authoritative server needs, unless given."""
    for rdtype, text in ((dns.rdatatype.SOA, _SOA_TEXT), (dns.rdatatype.NS, _NS_TEXT)):
        node = zone.find_node(zone.origin, create=True)
        rds = node.find_rdataset(dns.rdataclass.IN, rdtype, create=True)
        if not rds:
            rds.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text), DEFAULT_TTL)


def _self_and_parents(name: dns.name.Name, origin: dns.name.Name):
    while name.is_subdomain(origin):
        yield name
        if name == origin:
            return
        name = name.parent()


def _absolute(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(str(text), origin=dns.name.root,
                                  idna_codec=dns.name.IDNA_2003)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"not a DNS name: {text!r}") from exc


def _loopback_family(host: str) -> int:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"the sandbox DNS server needs a loopback address literal, "
                         f"not {host!r}") from exc
    if not address.is_loopback:
        raise ValueError(f"the sandbox DNS server serves loopback only, not {host}")
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _bind_pair(family: int, host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port (a free one when `port` is 0)."""
    last_error: OSError | None = None
    for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(8)
        except OSError as exc:
            udp.close()
            tcp.close()
            last_error = exc
            continue
        udp.settimeout(_POLL_S)
        tcp.settimeout(_POLL_S)
        return udp, tcp
    raise last_error


def _recv_exactly(conn: socket.socket, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = conn.recv(remaining)
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
