"""Migrate, roll back, resume: whole chains on sandbox tenants (issue 6 "Done when")."""

import json

import pytest

from runbook import chain, inventory, params
from runbook.sandbox import cli as sandbox_cli
from runbook.sandbox import scenarios
from runbook.sandbox import state as state_mod

pytestmark = pytest.mark.slow
KINDS = ("inbound_connectors", "outbound_connectors", "transport_rules")


def _objects(state_file):
    tenant = state_mod.load(state_file)
    return {kind: sorted((inventory.comparable(o) for o in tenant[kind]),
                         key=lambda o: str(o["Name"]).lower()) for kind in KINDS}


def _params(scenario, state_file, **extra):
    return params.validate(**scenarios.declared(scenario), sandbox_state=str(state_file),
                           wait_minutes=1.0, poll_seconds=0.5, **extra)


@pytest.mark.parametrize("scenario", ["legacy-inline", "legacy-parallel",
                                      "appliance-leftovers"])
def test_migrate_then_roll_back_restores_every_connector_and_rule(
        scenario, make_tenant, reports):
    state_file = make_tenant(scenario, propagation_delay_s=1)
    before = _objects(state_file)
    run = chain.run(_params(scenario, state_file, confirm=True), reports_dir=reports,
                    progress=lambda *_: None)
    assert run.run()["status"] == "succeeded", run.run()["steps"]
    assert _objects(state_file) != before

    planned = chain.rollback(run.path, confirm=False, progress=lambda *_: None)
    assert planned.run()["status"] == "planned"
    assert planned.run()["rollback_of"] == str(run.path.resolve())

    undo = chain.rollback(run.path, confirm=True, progress=lambda *_: None)
    assert undo.run()["status"] == "succeeded", undo.run()["steps"]
    assert _objects(state_file) == before


def test_slash_named_connectors_stop_at_step_3_and_resume_after_the_portal(
        make_tenant, reports, capsys):
    state_file = make_tenant("legacy-slash", propagation_delay_s=1)
    record = chain.run(_params("legacy-slash", state_file, confirm=True),
                       reports_dir=reports, progress=lambda *_: None)
    run = record.run()
    assert run["status"] == "failed"
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "failed"]
    verdict = [e["data"] for e in record.events() if e["kind"] == "verdict"][-1]
    assert verdict["step"] == "03-cleanup"
    assert "can only be removed by hand" in verdict["message"]

    # The engineer follows the instructions in the Exchange admin center.
    tenant = state_mod.load(state_file)
    slashed = [c["Name"] for kind in ("inbound_connectors", "outbound_connectors")
               for c in tenant[kind] if "/" in c["Name"] or "\\" in c["Name"]]
    assert slashed
    for name in slashed:
        renamed = name.replace("/", "-").replace("\\", "-")
        assert renamed in verdict["message"]
        assert sandbox_cli.main(["portal", str(state_file), "--rename", name,
                                 renamed]) == 0
        assert sandbox_cli.main(["portal", str(state_file), "--delete", renamed]) == 0

    resumed = chain.resume(record.path, progress=lambda *_: None)
    run = resumed.run()
    assert run["status"] == "succeeded", run["steps"]
    names = [c["Name"] for c in state_mod.load(state_file)["inbound_connectors"]]
    assert "[SEPPmail.cloud] Inbound-Parallel" in names
    assert not [n for n in names if "/" in n]
    from runbook.audit import verify
    assert verify(record.path).ok


def test_rollback_of_a_resumed_slash_run_restores_the_tenant_under_portal_names(
        make_tenant, reports):
    """A resumed step 3 keeps the run's first inventory, so rollback recreates what
    the first attempt removed; slash-named connectors come back under the portal
    names (Exchange refuses `/` in a new name, exchange-objects.md §9)."""
    state_file = make_tenant("legacy-slash", propagation_delay_s=1)
    before = _objects(state_file)
    record = chain.run(_params("legacy-slash", state_file, confirm=True),
                       reports_dir=reports, progress=lambda *_: None)
    first_before = record.read_json("inventory/before.json")
    tenant = state_mod.load(state_file)
    for kind in ("inbound_connectors", "outbound_connectors"):
        for name in [c["Name"] for c in tenant[kind] if "/" in c["Name"]]:
            renamed = name.replace("/", "-")
            sandbox_cli.main(["portal", str(state_file), "--rename", name, renamed])
            sandbox_cli.main(["portal", str(state_file), "--delete", renamed])
    resumed = chain.resume(record.path, progress=lambda *_: None)
    assert resumed.run()["status"] == "succeeded", resumed.run()["steps"]
    assert resumed.read_json("inventory/before.json") == first_before

    undo = chain.rollback(record.path, confirm=True, progress=lambda *_: None)
    assert undo.run()["status"] == "succeeded", undo.run()["steps"]
    restored = _objects(state_file)
    for kind in KINDS:
        wanted = sorted(o["Name"].replace("/", "-") for o in before[kind])
        assert sorted(o["Name"] for o in restored[kind]) == wanted, kind


def test_a_stopped_rollback_is_not_resumed_but_rolled_back_again(make_tenant, reports,
                                                                  monkeypatch):
    # `resume` of a rollback's record used to run the five migration steps.
    state_file = make_tenant("legacy-inline", propagation_delay_s=1)
    before = _objects(state_file)
    run = chain.run(_params("legacy-inline", state_file, confirm=True),
                    reports_dir=reports, progress=lambda *_: None)
    real_step = chain._run_step

    def interrupted(record, p, step, progress, extra=None, *, kernel=None):
        record.step_started(step, f"notebooks/{step}.ipynb")
        raise KeyboardInterrupt

    monkeypatch.setattr(chain, "_run_step", interrupted)
    said = []
    with pytest.raises(KeyboardInterrupt):
        chain.rollback(run.path, confirm=True, progress=said.append)
    monkeypatch.setattr(chain, "_run_step", real_step)
    [stopped] = [p for p in (reports / "contoso").iterdir()
                 if p.is_dir() and p != run.path]
    assert said == [f"run cancelled: {stopped} (`runbook rollback {run.path} "
                    "--confirm` again finishes the undo)"]
    with pytest.raises(chain.NothingToResume) as refused:
        chain.resume(stopped, progress=lambda *_: None)
    assert str(refused.value) == (
        f"{stopped}: this is a rollback of {run.path}; a rollback is not resumed: run "
        f"`runbook rollback {run.path} --confirm` again, its plan leaves out what is "
        "back already")
    undo = chain.rollback(run.path, confirm=True, progress=lambda *_: None)
    assert undo.run()["status"] == "succeeded", undo.run()["steps"]
    assert _objects(state_file) == before
