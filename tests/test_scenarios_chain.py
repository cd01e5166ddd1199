"""The runbook on every sandbox scenario does what an engineer wants there (issue 4).

Either the migration succeeds, or the chain stops early at the step whose
verdict holds the one instruction that fixes it. The report's outcome matches
run.json (issue 7), and the record verifies.
"""

import json

import pytest
from bs4 import BeautifulSoup

from runbook import chain, params
from runbook.audit import verify
from runbook.sandbox import scenarios

pytestmark = pytest.mark.slow

# scenario -> (run status, last step run, words of its verdict)
EXPECTED = {
    "legacy-inline": ("succeeded", "05-verify-mailflow", "both directions"),
    "legacy-parallel": ("succeeded", "05-verify-mailflow", "both directions"),
    "legacy-slash": ("failed", "03-cleanup", "Exchange admin center"),
    "appliance-leftovers": ("succeeded", "05-verify-mailflow", "both directions"),
    "clean": ("succeeded", "05-verify-mailflow", "both directions"),
    "wrong-mx": ("failed", "01-prerequisites", "change the MX record"),
    "not-prepared": ("failed", "01-prerequisites", "fetch ID"),
    "mixed-domains": ("failed", "01-prerequisites", "alpineski-shop.ch"),
    "large": ("succeeded", "05-verify-mailflow", "both directions"),
    "mail-loop": ("failed", "05-verify-mailflow", "adatum.ch"),
    "migrated": ("succeeded", "05-verify-mailflow", "both directions"),
}


def test_every_scenario_has_an_expectation():
    assert sorted(EXPECTED) == sorted(scenarios.names())


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_chain_on_scenario(scenario, make_tenant, reports):
    status, last_step, words = EXPECTED[scenario]
    state_file = make_tenant(scenario, propagation_delay_s=1)
    p = params.validate(**scenarios.declared(scenario), sandbox_state=str(state_file),
                        confirm=True, wait_minutes=1.0, poll_seconds=0.5)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    run = record.run()
    assert run["status"] == status, run["steps"]
    assert run["steps"][-1]["name"] == last_step
    verdict = [e["data"] for e in record.events() if e["kind"] == "verdict"][-1]
    assert verdict["step"] == last_step
    assert words in verdict["message"]

    page = BeautifulSoup((record.path / "report.html").read_text(), "html.parser")
    assert page.find(id="outcome").get_text(strip=True) == status
    assert verify(record.path).ok


def test_no_secret_lands_in_any_file_of_a_run(make_tenant, reports, monkeypatch,
                                               tmp_path):
    secret = "Pfx-Pa55word-7f3c1e9a"
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", secret)
    certificate = tmp_path / "contoso.pfx"
    certificate.write_bytes(b"not a real certificate")
    state_file = make_tenant("legacy-inline", propagation_delay_s=1)
    p = params.validate(**scenarios.declared("legacy-inline"),
                        sandbox_state=str(state_file), confirm=True, wait_minutes=1.0,
                        poll_seconds=0.5, app_id="0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
                        certificate_path=str(certificate))
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    assert record.run()["status"] == "succeeded"
    files = [f for f in reports.rglob("*") if f.is_file()]
    assert len(files) > 10
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    assert json.loads((record.path / "run.json").read_text())["parameters"]["app_id"]


# seppmail365cloud.md §2.2: the rules each version creates, in creation order
# (p1: none for inline, 050 still there for parallel; 2.0.2: 110 BGP and 120).
RULE = "[SEPPmail.cloud] - "
CLEAN = [RULE + "300 Clean outbound SEPPmail header decrypted",
         RULE + "400 Clean outbound SEPPmail header encrypted",
         RULE + "500 Clean outbound SEPPmail header outgoing",
         RULE + "600 Clean outbound SEPPmail header smarthost"]
VERSION_RULES = {
    ("1.3.0-preview1", "inline"): [],
    ("1.3.0-preview1", "parallel"): [
        RULE + "050 on SPF fail - no SEPPmail.Cloud",
        RULE + "060 Add header X-SM-ruleversion",
        RULE + "100 Route incoming e-mails to SEPPmail",
        RULE + "200 Route outgoing e-mails to SEPPmail", *CLEAN,
        RULE + "700 Clean outbound header X-sepp-smarthost"],
    ("2.0.2", "inline"): [RULE + "060 Add header X-SM-ruleversion",
                          RULE + "200 Route outgoing e-mails to SEPPmail"],
    ("2.0.2", "parallel"): [
        RULE + "060 Add header X-SM-ruleversion",
        RULE + "100 Route incoming e-mails to SEPPmail",
        RULE + "110 Route incoming BGP e-mails to SEPPmail",
        RULE + "120 Route incoming tagged e-mails to SEPPmail",
        RULE + "200 Route outgoing e-mails to SEPPmail", *CLEAN,
        RULE + "700 Clean outbound header X-sepp-smarthost"],
}


@pytest.mark.parametrize("version", ["1.3.0-preview1", "2.0.2"])
@pytest.mark.parametrize("scenario", ["legacy-inline", "legacy-parallel"])
def test_chain_with_each_cbc_module_version_creates_what_that_version_creates(
        scenario, version, make_tenant, reports):
    """Issue 4 "Done when": module_version picks the version step 2 installs,
    and step 4 expects what that version creates (seppmail365cloud.md §2.2 for
    the rules, §3.1 for Outbound-InLine's scope and EFSkipLastIP from 1.3.1)."""
    from runbook.sandbox import state as state_mod

    state_file = make_tenant(scenario, propagation_delay_s=1)
    declared = scenarios.declared(scenario)
    p = params.validate(**declared, sandbox_state=str(state_file), confirm=True,
                        wait_minutes=1.0, poll_seconds=0.5, module_version=version)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    run = record.run()
    assert run["status"] == "succeeded", run["steps"]
    verdicts = {e["data"]["step"]: e["data"]["message"] for e in record.events()
                if e["kind"] == "verdict"}
    assert verdicts["02-install-module"] == f"seppmail365cloud {version} is installed."
    assert f"as module {version} creates them" in verdicts["04-configure"]

    tenant = state_mod.load(state_file)
    assert version in [m["Version"] for m in tenant["installed_modules"]
                       if m["Name"] == "seppmail365cloud"]
    rules = sorted((r for r in tenant["transport_rules"]
                    if r["Name"].startswith("[SEPPmail")), key=lambda r: r["Priority"])
    assert [r["Name"] for r in rules] == VERSION_RULES[version, declared["routing"]]
    suffix = "InLine" if declared["routing"] == "inline" else "Parallel"
    [inbound] = [c for c in tenant["inbound_connectors"]
                 if c["Name"] == f"[SEPPmail.cloud] Inbound-{suffix}"]
    [outbound] = [c for c in tenant["outbound_connectors"]
                  if c["Name"] == f"[SEPPmail.cloud] Outbound-{suffix}"]
    assert inbound["EFSkipLastIP"] is (version == "2.0.2")
    p1_inline = version == "1.3.0-preview1" and declared["routing"] == "inline"
    assert outbound["IsTransportRuleScoped"] is not p1_inline
    assert outbound["RecipientDomains"] == (["*"] if p1_inline else [])


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_plan_only_chain_changes_no_byte_of_the_tenant(scenario, make_tenant, reports):
    """Without confirmation nothing changes, also where importing the installed
    module would (§6: 1.3.0 installs DNSClient-PS, 2.0 makes a test connector)."""
    state_file = make_tenant(scenario, propagation_delay_s=1)
    before = state_file.read_bytes()
    p = params.validate(**scenarios.declared(scenario), sandbox_state=str(state_file),
                        confirm=False, wait_minutes=1.0, poll_seconds=0.5)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    assert state_file.read_bytes() == before
    # The read-only steps find the same faults as in a confirmed run.
    status, last_step, words = EXPECTED[scenario]
    if status == "failed" and last_step in ("01-prerequisites", "05-verify-mailflow"):
        assert record.run()["status"] == "failed"
        verdict = [e["data"] for e in record.events() if e["kind"] == "verdict"][-1]
        assert (verdict["step"], words in verdict["message"]) == (last_step, True)
    else:
        assert record.run()["status"] == "planned", record.run()["steps"]
