"""Sandbox scenarios and the state file.

Seeded values are checked against seppmail365cloud.md (cited §N) and the
tenant table of docs/internals.md ("Sandbox scenarios").
"""

import json
import os
from datetime import datetime, timezone

import pytest

from runbook.sandbox import scenarios, state

NOW = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
ALL = ["legacy-inline", "legacy-parallel", "legacy-slash", "appliance-leftovers",
       "clean", "wrong-mx", "not-prepared", "mixed-domains", "large", "mail-loop",
       "migrated"]
# sha1 of the tenant id strings, worked out once with `sha1sum`.
CONTOSO_CBC = "33693731359576bd27e77e44462a234d54eaffba.cbc.seppmail.cloud."
FABRIKAM_CBC = "4550ea2201d1b7c3a448d55f1691a84408c1f210.cbc.seppmail.cloud."


def build(name, **options):
    return scenarios.build(name, now=NOW, **options)


def by_name(objects):
    return {o["Name"]: o for o in objects}


def records(built, rtype, name=None):
    return sorted(r["value"] for r in built["dns"]["records"]
                  if r["type"] == rtype and (name is None or r["name"] == name))


def test_all_scenarios_are_listed():
    """The brief's scenario list, in order."""
    assert scenarios.names() == ALL


@pytest.mark.parametrize("name", ALL)
def test_every_scenario_documents_itself(name):
    """internals.md: each scenario documents itself in its description."""
    built = build(name)
    assert built["description"] == scenarios.describe(name)
    assert built["scenario"] == name and built["schema"] == 1
    assert len(scenarios.describe(name).splitlines()[0]) < 100


@pytest.mark.parametrize("name", ALL)
def test_every_scenario_has_the_common_tenant_objects(name):
    """Brief: unrelated objects, <tenant>.onmicrosoft.com as InitialDomain."""
    built = build(name)
    initial = built["tenant"]["initial_domain"]
    assert initial == f"{built['tenant']['name']}.onmicrosoft.com"
    domains = by_name(built["accepted_domains"])
    assert domains[initial]["InitialDomain"] is True
    assert [d for d in domains.values() if d["Default"]][0]["DomainName"] == \
        built["tenant"]["default_domain"]
    assert any(c["Name"].startswith("Inbound from ") and
               c["ConnectorSource"] == "HybridWizard"
               for c in built["inbound_connectors"])
    assert any("disclaimer" in r["Name"] for r in built["transport_rules"])
    rules = sorted(built["transport_rules"], key=lambda r: r["Priority"])
    assert [r["Priority"] for r in rules] == list(range(len(rules)))
    assert built["installed_modules"][0]["Name"] == "ExchangeOnlineManagement"


@pytest.mark.parametrize("name", ALL)
def test_builds_are_deterministic(name):
    """Brief: deterministic GUIDs from the scenario name, so runs compare."""
    first, second = build(name), build(name)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    guids = [o["Guid"] for key in ("inbound_connectors", "outbound_connectors",
                                   "transport_rules") for o in first[key]]
    assert len(guids) == len(set(guids))


def test_reference_tenants_match_the_internals_table():
    """internals.md "Sandbox scenarios": tenants, ids and domains."""
    contoso, fabrikam = build("legacy-inline"), build("legacy-parallel")
    assert contoso["tenant"] == {
        "name": "contoso", "tenant_id": "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
        "initial_domain": "contoso.onmicrosoft.com", "default_domain": "contoso.ch"}
    assert [d["DomainName"] for d in contoso["accepted_domains"]] == [
        "contoso.ch", "contoso-group.ch", "contoso.onmicrosoft.com"]
    assert fabrikam["tenant"]["tenant_id"] == "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60"
    assert [d["DomainName"] for d in fabrikam["accepted_domains"]] == [
        "fabrikam.com", "fabrikam.onmicrosoft.com"]


def test_legacy_inline_holds_the_125_inline_connectors():
    """§3.3 1.2.5: cert *.ch.seppmail.cloud, SenderDomains smtp:*.ch…;1;
    §3.1: Outbound-InLine to <dom-dashed>.relay, DomainValidation, not scoped."""
    built = build("legacy-inline")
    inbound = by_name(built["inbound_connectors"])["[SEPPmail.cloud] Inbound-InLine"]
    assert inbound["TlsSenderCertificateName"] == "*.ch.seppmail.cloud"
    assert inbound["SenderDomains"] == ["smtp:*.ch.seppmail.cloud;1"]
    assert (inbound["ConnectorType"], inbound["RequireTls"],
            inbound["RestrictDomainsToCertificate"], inbound["EFSkipLastIP"]) == (
        "Partner", True, True, False)
    assert inbound["Comment"] == ("Created with SEPPmail365cloud PowerShell Module"
                                  " version 1.2.5 on 11/21/2022 09:30:00")
    outbound = by_name(built["outbound_connectors"])["[SEPPmail.cloud] Outbound-InLine"]
    assert outbound["SmartHosts"] == ["contoso-ch.relay.seppmail.cloud"]
    assert outbound["IsTransportRuleScoped"] is False
    assert outbound["RecipientDomains"] == ["*"]
    assert (outbound["TlsSettings"], outbound["TlsDomain"], outbound["UseMXRecord"]) \
        == ("DomainValidation", "*.ch.seppmail.cloud", False)
    assert not [r for r in built["transport_rules"] if "SEPPmail" in r["Name"]]


def test_legacy_inline_dns_points_mx_at_the_gate_hosts():
    """§4: inline MX = <dom-dashed>.gate.seppmail.cloud; ch Gate/Relay lists."""
    built = build("legacy-inline")
    assert records(built, "MX", "contoso.ch.") == ["10 contoso-ch.gate.seppmail.cloud."]
    assert records(built, "MX", "contoso-group.ch.") == [
        "10 contoso-group-ch.gate.seppmail.cloud."]
    assert records(built, "A", "contoso-ch.gate.seppmail.cloud.") == [
        "217.20.196.81", "86.119.35.35"]
    assert records(built, "A", "contoso-ch.relay.seppmail.cloud.") == [
        "217.20.196.83", "86.119.38.33"]
    assert records(built, "A", "contoso-ch.mail.seppmail.cloud.") == []
    assert records(built, "TXT", CONTOSO_CBC) == [
        '"seppmail-cbc=2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"']


def test_legacy_parallel_holds_the_125_parallel_setup():
    """§3.1/§3.3 parallel connectors; §2.2 1.2.5 rule order; §2.3 exclusions."""
    built = build("legacy-parallel")
    inbound = by_name(built["inbound_connectors"])["[SEPPmail.cloud] Inbound-Parallel"]
    assert (inbound["ConnectorType"], inbound["SenderDomains"],
            inbound["TlsSenderCertificateName"]) == (
        "OnPremises", ["smtp:*;1"], "*.de.seppmail.cloud")
    outbound = by_name(built["outbound_connectors"])[
        "[SEPPmail.cloud] Outbound-Parallel"]
    assert outbound["SmartHosts"] == ["fabrikam-com.mail.seppmail.cloud"]
    assert (outbound["ConnectorType"], outbound["IsTransportRuleScoped"]) == (
        "OnPremises", True)
    rules = sorted(built["transport_rules"], key=lambda r: r["Priority"])
    assert [r["Name"] for r in rules[2:]] == [
        "[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud",
        "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail",
        "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail",
        "[SEPPmail.cloud] - 300 Clean outbound SEPPmail header decrypted",
        "[SEPPmail.cloud] - 400 Clean outbound SEPPmail header encrypted",
        "[SEPPmail.cloud] - 500 Clean outbound SEPPmail header outgoing",
        "[SEPPmail.cloud] - 600 Clean outbound SEPPmail header smarthost"]
    incoming, outgoing = rules[3], rules[4]
    assert incoming["ExceptIfRecipientDomainIs"] == ["fabrikam.onmicrosoft.com"]
    assert incoming["RecipientDomainIs"] is None
    assert incoming["ExceptIfSCLOver"] == 5
    assert incoming["RouteMessageOutboundConnector"] == \
        "[SEPPmail.cloud] Outbound-Parallel"
    assert outgoing["ExceptIfSenderDomainIs"] == ["fabrikam.onmicrosoft.com"]
    assert outgoing["ExceptIfMessageTypeMatches"] == "OOF"
    assert rules[5]["RemoveHeader"] == "X-SM-decrypted"


def test_legacy_parallel_dns_keeps_mx_at_microsoft():
    """§4: parallel has only the mail host; de Mail list; MX at Microsoft."""
    built = build("legacy-parallel")
    assert records(built, "MX", "fabrikam.com.") == [
        "10 fabrikam-com.mail.protection.outlook.com."]
    assert records(built, "A", "fabrikam-com.mail.seppmail.cloud.") == [
        "162.55.155.177", "49.12.22.120"]
    assert records(built, "A", "fabrikam-com.gate.seppmail.cloud.") == []
    assert records(built, "TXT", FABRIKAM_CBC) != []


def test_legacy_slash_has_slash_named_connectors_a_rule_routes_through():
    """§2.1 legacy names (0.8.0-0.9.5 ` / `, 0.9.6 ` - `); §2.2 un-numbered rules."""
    built = build("legacy-slash")
    assert sorted(c["Name"] for c in built["inbound_connectors"]
                  if c["Name"].startswith("[SEPPmail")) == [
        "[SEPPmail.cloud] SEPPmail -> ExO - MX:SEPPmail",
        "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365"]
    routes = {r["RouteMessageOutboundConnector"] for r in built["transport_rules"]}
    assert "[SEPPmail.cloud] ExO -> SEPPmail / MX:M365" in routes
    assert "[SEPPmail.cloud] - Route incoming e-mails to SEPPmail" in by_name(
        built["transport_rules"])


def test_appliance_leftovers_mix_seppmail_and_customer_objects():
    """§5.1: `[SEPPmail]` appliance objects beside a customer rule naming SEPPmail."""
    built = build("appliance-leftovers")
    rules = by_name(built["transport_rules"])
    assert rules["[SEPPmail] - Route outgoing e-mails to appliance"][
        "RouteMessageOutboundConnector"] == "[SEPPmail] ExchangeOnline -> Appliance"
    assert "Allow SEPPmail newsletter" in rules
    assert "[SEPPmail.cloud] Inbound-InLine" in by_name(built["inbound_connectors"])


def test_clean_tenant_has_nothing_of_seppmail():
    """Never integrated: dehydrated, no ARC, module not installed."""
    built = build("clean")
    assert not [o for key in ("inbound_connectors", "outbound_connectors",
                              "transport_rules") for o in built[key]
                if "SEPPmail" in o["Name"]]
    assert built["organization_config"]["IsDehydrated"] is True
    assert built["arc_config"] is None
    assert [m["Name"] for m in built["installed_modules"]] == [
        "ExchangeOnlineManagement"]


def test_wrong_mx_declares_inline_but_mx_is_at_microsoft():
    """§4: inline needs the MX at the gate host; here it is not."""
    built = build("wrong-mx")
    assert records(built, "MX", "adventure-works.ch.") == [
        "10 adventure-works-ch.mail.protection.outlook.com."]
    assert records(built, "A", "adventure-works-ch.gate.seppmail.cloud.") != []


def test_not_prepared_lacks_the_cbc_readiness_record():
    """§3.2: no TXT at <sha1(tenantId)>.cbc.seppmail.cloud."""
    built = build("not-prepared")
    assert not [r for r in built["dns"]["records"]
                if r["name"].endswith(".cbc.seppmail.cloud.")]


def test_mixed_domains_has_one_domain_off_seppmail():
    """§10: inline needs all domains inline; the second one is not."""
    built = build("mixed-domains")
    assert records(built, "MX", "alpineskihouse.ch.") == [
        "10 alpineskihouse-ch.gate.seppmail.cloud."]
    assert records(built, "MX", "alpineski-shop.ch.") == [
        "10 alpineski-shop-ch.mail.protection.outlook.com."]
    assert records(built, "A", "alpineski-shop-ch.gate.seppmail.cloud.") == []


def test_large_scales_with_the_size_factor():
    """Benchmarks build 10x: 300 rules and 40 connector pairs per size unit."""
    one, two = build("large"), build("large", size=2)
    assert len(one["transport_rules"]) == 300 + 2 + 7
    assert len(two["transport_rules"]) == 600 + 2 + 7
    assert len(two["outbound_connectors"]) == 80 + 2
    seppmail = [r for r in one["transport_rules"] if r["Name"].startswith("[SEPP")]
    assert min(r["Priority"] for r in seppmail) == 302


def test_mail_loop_lists_the_recipient_tenant_without_cbc():
    """§10 caveat: the recipient tenant is on SEPPmail.cloud without CBC."""
    built = build("mail-loop")
    assert built["other_tenants"] == [{
        "name": "adatum", "domain": "adatum.ch", "domains": ["adatum.ch"],
        "initial_domain": "adatum.onmicrosoft.com",
        "tenant_id": "4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83", "region": "ch",
        "cbc": False}]
    inbound = by_name(built["inbound_connectors"])["[SEPPmail.cloud] Inbound-InLine"]
    assert inbound["TlsSenderCertificateName"] == \
        "0e2a4c6e-8f1b-4d3f-a5b7-9c1e3a5c7e9f.ch.seppmail.cloud"
    assert built["traffic"]["flows"][1]["recipient"] == "info@adatum.ch"


def test_options_override_delay_and_module():
    """build(name, propagation_delay_s=, module_installed=)."""
    built = build("legacy-inline", propagation_delay_s=600, module_installed="")
    assert built["propagation_delay_s"] == 600.0
    assert [m["Name"] for m in built["installed_modules"]] == [
        "ExchangeOnlineManagement"]
    assert build("clean", module_installed="1.3.0")["installed_modules"][1][
        "Version"] == "1.3.0"


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown sandbox scenario 'nope'; known: "
                                       "legacy-inline, legacy-parallel"):
        scenarios.build("nope")


# --- the state file ----------------------------------------------------------------

def test_state_round_trips_and_is_private(tmp_path):
    """internals.md "Sandbox state file": atomic JSON, owner-only."""
    path = tmp_path / "t.json"
    built = build("legacy-inline")
    state.save(path, built)
    assert state.load(path) == built
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_save_replaces_without_leaving_temp_files(tmp_path):
    path = tmp_path / "t.json"
    state.save(path, build("clean"))
    state.save(path, build("legacy-inline"))
    assert state.load(path)["scenario"] == "legacy-inline"
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"), ('{"schema": 2}', "not a schema-1 sandbox state"),
    ("[]", "not a schema-1 sandbox state"),
])
def test_load_refuses_what_is_not_a_state(tmp_path, text, reason):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(state.StateFileError, match=reason) as caught:
        state.load(path)
    assert caught.value.path == str(path)


def test_load_of_a_missing_file_is_a_state_error(tmp_path):
    with pytest.raises(state.StateFileError, match="No such file"):
        state.load(tmp_path / "missing.json")


def test_new_guid_is_stable_per_seed():
    assert state.new_guid("a") == state.new_guid("a") != state.new_guid("b")
    # UUID version 5 in the sandbox's namespace: the value is fixed forever.
    assert state.new_guid("contoso:inbound:x") == "4fe0d96c-09be-5085-adef-37e65934494f"
