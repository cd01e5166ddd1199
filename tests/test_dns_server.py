"""The sandbox DNS server answers like an authoritative server, over real UDP/TCP."""

from __future__ import annotations

import socket
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.update
import pytest

from runbook.sandbox.dnsserver import start_dns_server

RECORDS = [
    {"name": "contoso.ch.", "type": "MX", "ttl": 300,
     "value": "10 contoso-ch.gate.seppmail.cloud."},
    {"name": "contoso-ch.gate.seppmail.cloud.", "type": "A", "ttl": 300,
     "value": "86.119.35.35"},
    {"name": "f2b42af58ef2eda60ed6104e41e2aa23e42a8a6e.cbc.seppmail.cloud.",
     "type": "TXT", "value": '"ready"'},
    {"name": "müller.ch", "type": "MX",
     "value": "10 xn--mller-kva-ch.gate.seppmail.cloud."},
    {"name": "alias.contoso.ch.", "type": "CNAME",
     "value": "contoso-ch.gate.seppmail.cloud."},
    {"name": "broken.ch.", "type": "SERVFAIL"},
    {"name": "slow.ch.", "type": "TIMEOUT"},
]


@pytest.fixture(scope="module")
def server():
    with start_dns_server(RECORDS) as running:
        yield running


def ask(server, name, rdtype="A", rdclass=dns.rdataclass.IN, timeout=1.0):
    query = dns.message.make_query(name, rdtype, rdclass)
    host, port = server.address
    return dns.query.udp(query, host, port=port, timeout=timeout)


def texts(response):
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def test_answers_records_with_the_authoritative_flag(server):
    response = ask(server, "contoso.ch.", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert texts(response) == ["10 contoso-ch.gate.seppmail.cloud."]
    assert response.answer[0].ttl == 300


def test_ttl_defaults_to_300(server):
    name = "f2b42af58ef2eda60ed6104e41e2aa23e42a8a6e.cbc.seppmail.cloud."
    response = ask(server, name, "TXT")
    assert texts(response) == ['"ready"']
    assert response.answer[0].ttl == 300


def test_names_match_case_insensitively(server):
    assert texts(ask(server, "CONTOSO-CH.Gate.SEPPmail.Cloud.", "A")) == ["86.119.35.35"]


def test_other_type_of_an_existing_name_is_nodata_with_soa(server):
    response = ask(server, "contoso.ch.", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_empty_non_terminal_is_nodata_not_nxdomain(server):
    response = ask(server, "gate.seppmail.cloud.", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_unknown_name_is_nxdomain_with_soa_capped_at_its_minimum(server):
    response = ask(server, "nosuch.ch.", "MX")
    assert response.rcode() == dns.rcode.NXDOMAIN
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 300 and soa[0].minimum == 300


def test_unicode_record_names_are_served_in_punycode(server):
    response = ask(server, "xn--mller-kva.ch.", "MX")
    assert texts(response) == ["10 xn--mller-kva-ch.gate.seppmail.cloud."]


def test_cname_is_followed_within_the_served_data(server):
    response = ask(server, "alias.contoso.ch.", "A")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME,
                                                           dns.rdatatype.A]
    assert texts(response) == ["86.119.35.35", "contoso-ch.gate.seppmail.cloud."]


def test_servfail_knob_answers_servfail_for_every_type(server):
    assert ask(server, "broken.ch.", "MX").rcode() == dns.rcode.SERVFAIL
    assert ask(server, "BROKEN.ch.", "A").rcode() == dns.rcode.SERVFAIL


def test_timeout_knob_drops_the_query(server):
    started = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        ask(server, "slow.ch.", "MX", timeout=0.3)
    assert time.monotonic() - started >= 0.3
    # The server still answers other names afterwards.
    assert ask(server, "contoso.ch.", "MX").rcode() == dns.rcode.NOERROR


def test_timeout_knob_also_stays_silent_over_tcp(server):
    query = dns.message.make_query("slow.ch.", "MX")
    host, port = server.address
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(query, host, port=port, timeout=0.3)


def test_class_other_than_in_is_refused(server):
    assert ask(server, "contoso.ch.", "TXT", rdclass=dns.rdataclass.CH).rcode() \
        == dns.rcode.REFUSED


def test_update_opcode_is_not_implemented(server):
    update = dns.update.UpdateMessage("contoso.ch.")
    update.add("x", 300, "A", "192.0.2.1")
    host, port = server.address
    assert dns.query.udp(update, host, port=port, timeout=1).rcode() == dns.rcode.NOTIMP


def test_queries_are_logged_by_name_and_type(server):
    ask(server, "Contoso.CH.", "MX")
    assert server.queries[-1] == ("contoso.ch.", "MX")


def test_dnspython_resolver_gets_answers_and_exceptions(server):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.address[0]]
    resolver.port = server.address[1]
    resolver.lifetime = 1.0
    answer = resolver.resolve("contoso-ch.gate.seppmail.cloud", "A")
    assert [rd.address for rd in answer] == ["86.119.35.35"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nosuch.ch", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("contoso.ch", "AAAA")
    with pytest.raises(dns.resolver.NoNameservers):
        resolver.resolve("broken.ch", "MX")


def test_answer_too_big_for_udp_is_truncated_and_complete_over_tcp():
    # 40 A records: 12 (header) + 17 (question) + 40 * 16 = 669 bytes > 512.
    records = [{"name": "big.example.", "type": "A", "value": f"192.0.2.{i}"}
               for i in range(1, 41)]
    with start_dns_server(records) as server:
        host, port = server.address
        query = dns.message.make_query("big.example.", "A")
        udp = dns.query.udp(query, host, port=port, timeout=1, ignore_trailing=True,
                            raise_on_truncation=False)
        assert udp.flags & dns.flags.TC
        tcp = dns.query.tcp(query, host, port=port, timeout=1)
        assert len(texts(tcp)) == 40
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = [host], port, 2.0
        assert len(resolver.resolve("big.example.", "A")) == 40


def test_edns_payload_lets_a_bigger_udp_answer_through():
    records = [{"name": "big.example.", "type": "A", "value": f"192.0.2.{i}"}
               for i in range(1, 41)]
    with start_dns_server(records) as server:
        host, port = server.address
        query = dns.message.make_query("big.example.", "A", use_edns=0, payload=1232)
        response = dns.query.udp(query, host, port=port, timeout=1)
        assert not response.flags & dns.flags.TC
        assert len(texts(response)) == 40


def test_with_zones_names_outside_them_are_refused():
    records = [{"name": "contoso.ch.", "type": "MX", "value": "10 mx.contoso.ch."}]
    with start_dns_server(records, zones=["contoso.ch"]) as server:
        assert ask(server, "fabrikam.com.", "MX").rcode() == dns.rcode.REFUSED
        assert ask(server, "nosuch.contoso.ch.", "A").rcode() == dns.rcode.NXDOMAIN
        assert texts(ask(server, "contoso.ch.", "MX")) == ["10 mx.contoso.ch."]


def test_record_outside_the_zones_is_rejected():
    with pytest.raises(ValueError, match=r"DNS record 0 \(fabrikam.com.\) is outside"):
        start_dns_server([{"name": "fabrikam.com", "type": "A", "value": "192.0.2.1"}],
                         zones=["contoso.ch"])


@pytest.mark.parametrize("record, message", [
    ({"type": "A", "value": "192.0.2.1"}, r"DNS record 0 needs 'name' and 'type'"),
    ({"name": "a.ch", "type": "A"}, r"DNS record 0 \(a.ch A\) has no 'value'"),
    ({"name": "a.ch", "type": "A", "value": "not-an-ip"},
     r"DNS record 0 \(a.ch A 'not-an-ip'\) is not valid"),
    ({"name": "a.ch", "type": "NOSUCHTYPE", "value": "x"},
     r"DNS record 0 \(a.ch NOSUCHTYPE 'x'\) is not valid"),
], ids=["no name", "no value", "bad address", "unknown type"])
def test_malformed_records_are_rejected_with_their_index(record, message):
    with pytest.raises(ValueError, match=message):
        start_dns_server([record])


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost"])
def test_only_loopback_literals_are_served(host):
    with pytest.raises(ValueError, match="loopback"):
        start_dns_server(RECORDS, host=host)


def test_ipv6_loopback_is_served_when_the_machine_has_it():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with start_dns_server(RECORDS, host="::1") as server:
        assert server.nameserver == f"[::1]:{server.address[1]}"
        assert texts(ask(server, "contoso.ch.", "MX")) == \
            ["10 contoso-ch.gate.seppmail.cloud."]


def test_nameserver_is_host_colon_port():
    with start_dns_server([]) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        assert server.nameserver == f"127.0.0.1:{port}"


def test_stop_ends_the_threads_and_frees_the_port():
    server = start_dns_server(RECORDS)
    host, port = server.address
    before = {t.name for t in threading.enumerate()}
    assert {"sandbox-dns-udp", "sandbox-dns-tcp"} <= before
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert not any(t.is_alive() for t in server._threads)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((host, port))  # would raise if the server still held it


def test_fixed_port_in_use_raises_oserror():
    with start_dns_server([]) as server:
        with pytest.raises(OSError):
            start_dns_server([], port=server.address[1])
