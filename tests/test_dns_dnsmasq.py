"""The same DNS checks against dnsmasq, a third-party server, on loopback.

dnsmasq answers only from its command line (``--local=/#/``, no upstream), so
unknown names are NXDOMAIN and nothing is forwarded. It cannot fail on purpose
without an upstream, so the SERVFAIL/timeout cases and the null MX run against
our own server only (tests/test_dns.py).
"""

from __future__ import annotations

import pytest

from runbook import dns as rdns
from tests.dns_helpers import (CASES, DNSMASQ, WORLD, free_port, start_dnsmasq,
                               stop_process, wait_until_answering)

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq not installed")

DATA_CASES = [c for c in CASES if not c["knob"]]


@pytest.fixture(scope="module")
def dnsmasq():
    port = free_port()
    process = start_dnsmasq(WORLD, port)
    try:
        wait_until_answering(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def resolver(dnsmasq):
    return rdns.make_resolver(dnsmasq, timeout=2.0)


@pytest.mark.parametrize("case", DATA_CASES, ids=[c["id"] for c in DATA_CASES])
def test_domain_check_against_dnsmasq(case, resolver):
    check = rdns.check_domain(case["domain"], routing=case["routing"],
                              region=case["region"], tenant_id=case["tenant_id"],
                              resolver=resolver)
    assert check.status == case["expect"]["status"], check.message
    for field, value in case["expect"].items():
        assert getattr(check, field) == value, field


def test_every_status_dnsmasq_can_express_is_covered():
    covered = {c["expect"]["status"] for c in DATA_CASES}
    assert covered == set(rdns.STATUSES) - {"timeout", "server-failure"}


def test_main_against_dnsmasq(dnsmasq, capsys):
    code = rdns.main(["contoso.ch", "fabrikam.com", "--routing", "inline",
                      "--region", "ch", "--nameserver", dnsmasq])
    out = capsys.readouterr().out
    assert code == 1
    assert ("fabrikam.com: routing-mismatch: SEPPmail.cloud has fabrikam.com set up "
            "for parallel routing") in out
    assert out.index("fabrikam.com: routing-mismatch") < out.index("contoso.ch: ok")
