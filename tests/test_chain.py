"""The whole chain on sandbox tenants (issue 2, "Done when")."""

import json

import pytest

from runbook import chain, params
from runbook.sandbox import state as state_mod

pytestmark = pytest.mark.slow

CASES = {
    "legacy-inline": dict(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
                          region="ch", routing="inline"),
    "legacy-parallel": dict(tenant="fabrikam", domains=["fabrikam.com"], region="de",
                            routing="parallel"),
}
TENANT_IDS = {"contoso": "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
              "fabrikam": "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60"}


def _run(scenario, state_file, reports, confirm, **extra):
    p = params.validate(**CASES[scenario], sandbox_state=str(state_file),
                        confirm=confirm, wait_minutes=1.0, poll_seconds=0.5, **extra)
    return chain.run(p, reports_dir=reports, progress=lambda *_: None)


def _seppmail(objects):
    return sorted(o["Name"] for o in objects if o["Name"].lower().startswith("[seppmail"))


@pytest.mark.parametrize("scenario", ["legacy-inline", "legacy-parallel"])
def test_confirmed_chain_migrates_to_exactly_the_cbc_objects(scenario, make_tenant,
                                                            reports):
    state_file = make_tenant(scenario, propagation_delay_s=2)
    record = _run(scenario, state_file, reports, confirm=True)
    run = json.loads((record.path / "run.json").read_text())
    assert run["status"] == "succeeded", run["steps"]
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 5
    assert run["sandbox_state"] == str(state_file)
    for step in chain.STEPS:
        nb = json.loads((record.path / "notebooks" / f"{step}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], step

    tenant = state_mod.load(state_file)
    routing = CASES[scenario]["routing"]
    suffix = "InLine" if routing == "inline" else "Parallel"
    assert _seppmail(tenant["inbound_connectors"]) == [f"[SEPPmail.cloud] Inbound-{suffix}"]
    assert _seppmail(tenant["outbound_connectors"]) == [f"[SEPPmail.cloud] Outbound-{suffix}"]
    inbound = [c for c in tenant["inbound_connectors"]
               if c["Name"].startswith("[SEPPmail.cloud]")][0]
    region = CASES[scenario]["region"]
    tid = TENANT_IDS[CASES[scenario]["tenant"]]
    assert inbound["TlsSenderCertificateName"] == f"{tid}.{region}.seppmail.cloud"
    assert inbound["SenderDomains"] == ["smtp:*;1"]
    rules = _seppmail(tenant["transport_rules"])
    if routing == "parallel":
        assert "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail" in rules
        assert "[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud" not in rules
    else:
        assert rules == ["[SEPPmail.cloud] - 060 Add header X-SM-ruleversion",
                         "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"]
    assert (record.path / "backup" / "index.json").exists()
    assert (record.path / "inventory" / "before.json").exists()
    assert (record.path / "inventory" / "after.json").exists()


def test_unconfirmed_chain_is_a_plan_that_changes_nothing(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    before = state_mod.load(state_file)
    record = _run("legacy-inline", state_file, reports, confirm=False)
    run = record.run()
    assert run["status"] == "planned"
    after = state_mod.load(state_file)
    for key in ("inbound_connectors", "outbound_connectors", "transport_rules",
                "accepted_domains", "installed_modules", "arc_config",
                "hosted_connection_filter_policy", "hosted_content_filter_policy"):
        assert after.get(key) == before.get(key), key
    verdicts = [e["data"] for e in record.events() if e["kind"] == "verdict"]
    assert [v["status"] for v in verdicts] == ["succeeded", "planned", "planned",
                                               "planned", "planned"]
    assert all(v["message"] for v in verdicts)


def test_chain_stops_at_the_first_failing_step(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    p = params.validate(tenant="contoso", domains=["nosuch.example"], region="ch",
                        routing="inline", sandbox_state=str(state_file), confirm=True)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    run = record.run()
    assert run["status"] == "failed"
    assert [s["name"] for s in run["steps"]] == ["01-prerequisites"]
    assert run["steps"][0]["status"] == "failed"
    assert run["steps"][0]["error"]["ename"] == "StepFailed"
    assert "nosuch.example" in run["steps"][0]["error"]["evalue"]
    assert (record.path / "notebooks" / "01-prerequisites.ipynb").exists()
