"""DNS checks against the sandbox DNS server on loopback, for every status."""

from __future__ import annotations

import hashlib
import socket
import json

import pytest

from runbook import dns as rdns
from runbook import seppmail
from runbook.sandbox.dnsserver import start_dns_server
from tests.dns_helpers import (CASES, KNOB_WORLD, NOT_READY_TENANT, READY_TENANT,
                               READY_TXT, WORLD)

TIMEOUT_S = 0.6  # loopback answers take milliseconds; a dropped query costs this


@pytest.fixture(scope="module")
def server():
    with start_dns_server(WORLD + KNOB_WORLD) as running:
        yield running


@pytest.fixture(scope="module")
def resolver(server):
    return rdns.make_resolver(server.nameserver, timeout=TIMEOUT_S)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_domain_check_gives_the_expected_status_and_facts(case, resolver):
    check = rdns.check_domain(case["domain"], routing=case["routing"],
                              region=case["region"], tenant_id=case["tenant_id"],
                              resolver=resolver)
    assert check.status == case["expect"]["status"], check.message
    for field, value in case["expect"].items():
        assert getattr(check, field) == value, field
    assert check.message
    if check.status != "ok":
        assert check.problems[0] == check.status


def test_cbc_name_is_sha1_of_the_tenant_id_string():
    # Pinned literal from coreutils sha1sum; hashlib recomputes it here.
    digest = hashlib.sha1(READY_TENANT.encode("ascii")).hexdigest()
    assert READY_TXT == f"{digest}.cbc.seppmail.cloud"
    assert seppmail.cbc_readiness_name(READY_TENANT) == READY_TXT


def test_tenant_id_in_upper_case_finds_the_same_txt(resolver):
    check = rdns.check_domain("contoso.ch", routing="inline", region="ch",
                              tenant_id=READY_TENANT.upper(), resolver=resolver)
    assert check.cbc_ready is True and check.status == "ok"


def test_cbc_txt_is_asked_at_the_hashed_name(server, resolver):
    rdns.check_domain("contoso.ch", routing="inline", tenant_id=NOT_READY_TENANT,
                      resolver=resolver)
    digest = hashlib.sha1(NOT_READY_TENANT.encode()).hexdigest()
    expected = f"{digest}.cbc.seppmail.cloud."
    assert (expected, "TXT") in server.queries


def test_microsoft_mx_is_never_looked_up_by_building_its_name(server, resolver):
    rdns.check_domain("tailspin.com", routing="parallel", resolver=resolver)
    asked = {name for name, _ in server.queries}
    assert not any("mail.protection.outlook.com" in name and "tailspin" in name
                   for name in asked)


def test_timeout_message_does_not_claim_a_missing_record(resolver):
    check = rdns.check_domain("slow.ch", routing="inline", resolver=resolver)
    assert check.status == "timeout"
    assert "slow.ch MX" in check.message
    assert "no MX" not in check.message and "does not exist" not in check.message


def test_messages_say_what_to_do(resolver):
    wrong = rdns.check_domain("wrongmx.ch", routing="inline", resolver=resolver)
    assert wrong.message == (
        "the preferred MX of wrongmx.ch is wrongmx-ch.mail.protection.outlook.com; "
        "for inline routing it must be wrongmx-ch.gate.seppmail.cloud alone: change "
        "the MX record at the domain's DNS provider")
    region = rdns.check_domain("contoso.ch", routing="inline", region="de",
                               resolver=resolver)
    assert region.message == (
        "the gate host of contoso.ch resolves to 86.119.35.35, which is SEPPmail.cloud "
        "region ch, but de was declared: declare region ch, or ask SEPPmail support")


def test_inbound_only_ok_message_names_the_missing_relay(resolver):
    check = rdns.check_domain("inbound.ch", routing="inline", resolver=resolver)
    assert "inbound-ch.relay.seppmail.cloud does not resolve" in check.message


@pytest.mark.parametrize("kwargs, message", [
    (dict(domain="not a domain", routing="inline"), "not a domain name"),
    (dict(domain="contoso.ch", routing="hybrid"),
     "routing must be one of inline, parallel"),
    (dict(domain="contoso.ch", routing="inline", region="us"),
     "region must be one of ch, prv, de, dev, not 'us'"),
    (dict(domain="contoso.ch", routing="inline", tenant_id="contoso"),
     "a tenant ID is a GUID"),
], ids=["domain", "routing", "region", "tenant id"])
def test_bad_input_is_a_value_error_not_a_status(kwargs, message, resolver):
    with pytest.raises(ValueError, match=message):
        rdns.check_domain(kwargs.pop("domain"), resolver=resolver, **kwargs)


def test_check_domains_keeps_the_order_given(resolver):
    checks = rdns.check_domains(["nosuch.ch", "contoso.ch"], routing="inline",
                                resolver=resolver)
    assert [c.ascii for c in checks] == ["nosuch.ch", "contoso.ch"]


def test_frame_puts_failing_domains_first(resolver):
    checks = rdns.check_domains(["contoso.ch", "wrongmx.ch", "multi.ch", "unset.ch"],
                                routing="inline", resolver=resolver)
    frame = rdns.to_frame(checks)
    assert list(frame.columns) == ["domain", "status", "preferred MX", "provisioned",
                                   "region", "CBC ready", "message"]
    assert list(frame["domain"]) == ["wrongmx.ch", "unset.ch", "contoso.ch", "multi.ch"]
    assert list(frame["status"]) == ["wrong-mx", "not-provisioned", "ok", "ok"]
    assert frame.iloc[2]["preferred MX"] == "contoso-ch.gate.seppmail.cloud"


def test_json_is_one_plain_object_per_domain(resolver):
    checks = rdns.check_domains(["müller.ch"], routing="inline", resolver=resolver)
    [record] = json.loads(json.dumps(rdns.to_json(checks)))
    assert record["domain"] == "müller.ch"
    assert record["ascii"] == "xn--mller-kva.ch"
    assert record["status"] == "ok"
    assert record["mx"] == ["10 xn--mller-kva-ch.gate.seppmail.cloud"]
    assert record["hosts"]["relay"] == ["217.20.196.83"]


# --- make_resolver ---

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)),
    ("[::1]", ("::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:db8::1]:53", ("2001:db8::1", 53)),
])
def test_nameserver_forms(text, expected):
    assert rdns.parse_nameserver(text) == expected


@pytest.mark.parametrize("text, message", [
    ("dns.google", "must be an IP address"),
    ("ns1.example.com:53", "must be an IP address"),
    ("127.0.0.1:0", "not a port number"),
    ("127.0.0.1:70000", "not a port number"),
    ("127.0.0.1:x", "not a port number"),
    ("[::1]53", "not a name server address"),
])
def test_nameserver_that_is_not_an_address_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        rdns.make_resolver(text)


def test_resolver_points_at_the_given_server_and_bounds_each_lookup():
    resolver = rdns.make_resolver("127.0.0.1:5353", timeout=1.5)
    assert resolver.nameservers == ["127.0.0.1"]
    assert resolver.port == 5353
    assert resolver.lifetime == 1.5 and resolver.timeout == 0.75


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout must be positive"):
        rdns.make_resolver("127.0.0.1", timeout=0)


# --- main ---

def test_main_prints_a_table_and_exits_0_when_all_ok(server, capsys):
    code = rdns.main(["contoso.ch", "multi.ch", "--routing", "inline", "--region", "ch",
                      "--nameserver", server.nameserver, "--timeout", str(TIMEOUT_S)])
    out = capsys.readouterr().out
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:2] == ["domain", "status"]
    assert "contoso-ch.gate.seppmail.cloud" in out
    assert "contoso.ch: ok: MX contoso-ch.gate.seppmail.cloud fits inline routing" in out


def test_main_json_and_exit_1_when_one_domain_fails(server, capsys):
    code = rdns.main(["fabrikam.com", "northwind.com", "--routing", "parallel",
                      "--region", "de", "--tenant-id", READY_TENANT, "--json",
                      "--nameserver", server.nameserver])
    records = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(r["domain"], r["status"]) for r in records] == [
        ("fabrikam.com", "ok"), ("northwind.com", "wrong-mx")]
    assert records[0]["mx"] == ["0 fabrikam-com.mail.protection.outlook.com"]
    assert records[0]["cbc_ready"] is True


def test_main_exits_2_on_a_hostname_nameserver(capsys):
    code = rdns.main(["contoso.ch", "--routing", "inline", "--nameserver", "dns.google"])
    assert code == 2
    assert "runbook dns: error: the name server must be an IP address" in \
        capsys.readouterr().err


def test_main_exits_2_on_a_bad_domain_before_any_lookup(server, capsys):
    asked = len(server.queries)
    code = rdns.main(["contoso.ch", "bad domain", "--routing", "inline",
                      "--nameserver", server.nameserver])
    assert code == 2
    assert "not a domain name" in capsys.readouterr().err
    assert len(server.queries) == asked


def test_main_usage_error_exits_2(capsys):
    assert rdns.main(["contoso.ch", "--routing", "sideways"]) == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_server_that_never_answers_is_a_timeout_for_every_lookup():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never read: queries go unanswered
        resolver = rdns.make_resolver(f"127.0.0.1:{silent.getsockname()[1]}",
                                      timeout=0.2)
        check = rdns.check_domain("contoso.ch", routing="inline", resolver=resolver)
    assert check.status == "timeout"
    assert check.problems == ["timeout"]
    assert (check.mx, check.provisioned) == ([], None)
    assert check.hosts == {"gate": None, "relay": None, "mail": None}


def test_every_status_has_a_case():
    assert {c["expect"]["status"] for c in CASES} == set(rdns.STATUSES)


def test_not_provisioned_message_names_the_three_hosts(resolver):
    check = rdns.check_domain("unset.ch", routing="inline", resolver=resolver)
    assert check.message == (
        "none of unset-ch.gate.seppmail.cloud, unset-ch.relay.seppmail.cloud or "
        "unset-ch.mail.seppmail.cloud resolves, so SEPPmail.cloud has not set up this "
        "domain: add it in login.seppmail.cloud or ask SEPPmail support")
