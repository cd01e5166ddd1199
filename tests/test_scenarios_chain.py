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
