"""SEPPmail.cloud facts, pinned against seppmail365cloud.md."""

import hashlib

import pytest

from runbook import seppmail


def test_hosts_replace_every_dot_with_a_dash_and_omit_the_region():
    """§3.1 notes: <dom-dashed>, region not part of the smarthost name."""
    assert seppmail.gate_host("contoso.ch") == "contoso-ch.gate.seppmail.cloud"
    assert seppmail.smarthost("mail.contoso.co.uk", "inline") == \
        "mail-contoso-co-uk.relay.seppmail.cloud"
    assert seppmail.smarthost("fabrikam.com", "parallel") == \
        "fabrikam-com.mail.seppmail.cloud"


def test_certificate_name_is_tenant_id_dot_region():
    """§3.2: tenant ID + the region's TLS name without the *."""
    assert seppmail.certificate_name("2C4F6A8E-1B3D-4E5F-9A7B-0C1D2E3F4A5B", "ch") == \
        "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b.ch.seppmail.cloud"


def test_cbc_readiness_record_is_sha1_of_the_tenant_id():
    """§3.2: TXT at <sha1-hex of tenantId string>.cbc.seppmail.cloud."""
    tid = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
    digest = hashlib.sha1(tid.encode()).hexdigest()
    assert seppmail.cbc_readiness_name(tid) == f"{digest}.cbc.seppmail.cloud"
    assert seppmail.cbc_readiness_name(tid.upper()) == \
        "33693731359576bd27e77e44462a234d54eaffba.cbc.seppmail.cloud"


def test_region_is_found_by_gate_or_mail_address():
    """§4: Gate list for inline, Mail list for parallel."""
    assert seppmail.region_of_address("86.119.35.35", "inline") == "ch"
    assert seppmail.region_of_address("162.55.155.177", "parallel") == "de"
    assert seppmail.region_of_address("86.119.35.35", "parallel") is None
    assert seppmail.region_of_address("49.12.100.186", "parallel") == "prv"


def test_inline_cbc_connectors_for_preview1():
    """§3.1 for p1: Partner, smtp:*;1, tenant certificate; outbound not yet scoped."""
    tid = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"
    got = seppmail.expected_connectors(tenant_id=tid, domain="contoso.ch", region="ch",
                                       routing="inline", module_version="1.3.0-preview1")
    inbound = got["[SEPPmail.cloud] Inbound-InLine"]
    outbound = got["[SEPPmail.cloud] Outbound-InLine"]
    assert inbound["ConnectorType"] == "Partner"
    assert inbound["SenderDomains"] == ["smtp:*;1"]
    assert inbound["TlsSenderCertificateName"] == f"{tid}.ch.seppmail.cloud"
    assert "EFSkipLastIP" not in inbound
    assert outbound["SmartHosts"] == ["contoso-ch.relay.seppmail.cloud"]
    assert outbound["TlsDomain"] == "*.ch.seppmail.cloud"
    assert outbound["IsTransportRuleScoped"] is False


def test_parallel_cbc_connectors_for_2_0_2():
    """§3.1: OnPremises both ways, EFSkipLastIP from 1.3.1, rule-scoped outbound."""
    got = seppmail.expected_connectors(tenant_id="7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60",
                                       domain="fabrikam.com", region="de",
                                       routing="parallel", module_version="2.0.2")
    inbound = got["[SEPPmail.cloud] Inbound-Parallel"]
    outbound = got["[SEPPmail.cloud] Outbound-Parallel"]
    assert inbound["ConnectorType"] == outbound["ConnectorType"] == "OnPremises"
    assert inbound["RestrictDomainsToIPAddresses"] is False
    assert inbound["EFSkipLastIP"] is True
    assert outbound["SmartHosts"] == ["fabrikam-com.mail.seppmail.cloud"]
    assert outbound["IsTransportRuleScoped"] is True


@pytest.mark.parametrize("version, routing, numbers", [
    ("1.3.0-preview1", "parallel", ["050", "060", "100", "200", "300", "400", "500",
                                    "600", "700"]),
    ("1.3.0-preview1", "inline", []),
    ("1.3.0", "inline", ["060", "200"]),
    ("2.0.2", "parallel", ["060", "100", "110", "120", "200", "300", "400", "500",
                           "600", "700"]),
    ("2.0.2", "inline", ["060", "200"]),
])
def test_rules_per_version_and_mode(version, routing, numbers):
    """§2.2 table."""
    names = seppmail.expected_rules(version, routing)
    assert [n[len("[SEPPmail.cloud] - "):][:3] for n in names] == numbers


def test_bad_routing_and_region_are_refused():
    with pytest.raises(ValueError, match="routing must be one of inline, parallel"):
        seppmail.smarthost("contoso.ch", "hybrid")
    with pytest.raises(ValueError, match="region must be one of"):
        seppmail.certificate_name("x", "eu")


@pytest.mark.parametrize("typed, encoded", [
    ("Müller.CH.", "xn--mller-kva.ch"), ("xn--mller-kva.ch", "xn--mller-kva.ch")])
def test_ascii_domain_accepts_both_forms(typed, encoded):
    assert seppmail.ascii_domain(typed) == encoded


@pytest.mark.parametrize("bad", ["", "contoso", "-a.ch", "a b.ch", "a_b.ch", "a..ch"])
def test_ascii_domain_refuses_non_domains(bad):
    with pytest.raises(ValueError):
        seppmail.ascii_domain(bad)
