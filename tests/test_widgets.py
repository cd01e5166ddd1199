"""Widgets for stepping through the notebooks, and steps run twice (issue 9).

The widget tests drive the same objects JupyterLab shows, without a browser:
`Confirmation.click()` is what the button's click runs. test_browser.py
clicks the real button.
"""

import json
from datetime import datetime
from pathlib import Path

import papermill
import pytest
from IPython.core.formatters import DisplayFormatter

from runbook import cleanup, inventory, mailflow, widgets
from runbook.audit import RunRecord, verify
from runbook.notebook import open_step
from runbook.sandbox import state as state_mod

CONTOSO = dict(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
               region="ch", routing="inline", operator="Ada Lovelace")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _seppmail_names(state_file) -> list[str]:
    state = state_mod.load(state_file)
    return sorted(o["Name"] for key in ("inbound_connectors", "outbound_connectors",
                                        "transport_rules")
                  for o in state[key] if o["Name"].lower().startswith("[seppmail"))


def _events(ctx, kind):
    return [e["data"] for e in ctx.record.events() if e["kind"] == kind]


@pytest.fixture
def step(make_tenant, reports):
    """Open a live step on a fresh legacy-inline tenant, as JupyterLab would."""
    opened = []

    def make(name="03-cleanup", **values):
        state = values.pop("sandbox_state", None) or make_tenant("legacy-inline")
        namespace = dict(CONTOSO, sandbox_state=str(state), **values)
        ctx = widgets.interactive(open_step(name, namespace), live=True)
        opened.append(ctx)
        return ctx, state

    yield make
    for ctx in opened:
        if not ctx.outcome:
            ctx.session.close()


def _cleanup_offer(ctx, live=True):
    """Step 3's cells: the plan, then the work under the button."""
    plan = cleanup.plan(inventory.take(ctx.exo))

    def remove(confirmed):
        result = cleanup.run(plan, record=ctx.record, exo=ctx.exo, confirmed=confirmed)
        return result.status, result.message

    outcome = widgets.confirm(ctx, remove, summary=plan.summary(),
                              objects=plan.removals, live=live)
    return plan, outcome


# -- is a person there? ---------------------------------------------------------


class _Kernel:
    def __init__(self, msg_type, allow_stdin):
        self.parent = {"header": {"msg_type": msg_type},
                       "content": {"allow_stdin": allow_stdin}}

    def get_parent(self, channel):
        assert channel == "shell"
        return self.parent


@pytest.mark.parametrize("msg_type, allow_stdin, live", [
    ("execute_request", True, True),     # JupyterLab runs the cell
    ("execute_request", False, False),   # papermill (nbclient) and nbval
    ("comm_msg", True, False),           # inside a widget callback
])
def test_a_live_frontend_is_one_that_asks_with_allow_stdin(monkeypatch, msg_type,
                                                           allow_stdin, live):
    monkeypatch.delenv(widgets.ENV, raising=False)
    monkeypatch.setattr(widgets, "_kernel", lambda: _Kernel(msg_type, allow_stdin))
    assert widgets.frontend_is_live() is live


def test_no_kernel_means_no_widgets_unless_forced(monkeypatch):
    monkeypatch.delenv(widgets.ENV, raising=False)
    assert widgets.frontend_is_live() is False
    monkeypatch.setenv(widgets.ENV, "on")
    assert widgets.frontend_is_live() is True
    monkeypatch.setenv(widgets.ENV, "off")
    monkeypatch.setattr(widgets, "_kernel", lambda: _Kernel("execute_request", True))
    assert widgets.frontend_is_live() is False


# -- the confirmation button ----------------------------------------------------


def test_a_plan_waits_under_its_button_and_changes_nothing(step):
    ctx, state = step()
    names_before = _seppmail_names(state)
    plan, outcome = _cleanup_offer(ctx)
    assert outcome.state == widgets.WAITING
    assert outcome.button.description == "Apply this plan"
    assert outcome.verdict[0] == "planned"
    held = ctx.conclude(*outcome.verdict)                  # Run All reached the end
    assert held == "planned"
    # shown as nothing: a click later turns the verdict above it into "passed"
    assert DisplayFormatter().format(held) == ({}, {})
    assert ctx.held == outcome.verdict
    assert _events(ctx, "verdict") == [] and _events(ctx, "change-requested") == []
    assert _seppmail_names(state) == names_before
    assert names_before == sorted(i.name for i in plan.removals) == [
        "[SEPPmail.cloud] Inbound-InLine", "[SEPPmail.cloud] Outbound-InLine"]


def test_clicking_applies_exactly_the_plan_shown_and_records_the_confirmation(step):
    ctx, state = step()
    plan, outcome = _cleanup_offer(ctx)
    ctx.conclude(*outcome.verdict)
    removed_guids = sorted(i.obj["Guid"] for i in plan.removals)

    status, message = outcome.click()

    assert status == "succeeded", message
    assert _seppmail_names(state) == []
    confirmation, = _events(ctx, "confirmation")
    assert confirmation["by"] == "Ada Lovelace" and confirmation["via"] == "button"
    assert datetime.fromisoformat(confirmation["at"]).utcoffset().total_seconds() == 0
    assert confirmation["plan"] == plan.summary()
    assert confirmation["plan_sha256"] == widgets.plan_digest(plan.removals)
    assert confirmation["objects"] == [f"remove {inventory.KIND_LABELS[i.kind]} "
                                       f"{i.name!r}" for i in plan.removals]
    requested = _events(ctx, "change-requested")
    assert sorted(e["parameters"]["Identity"] for e in requested) == removed_guids
    kinds = [e["kind"] for e in ctx.record.events()]
    assert kinds.index("confirmation") < kinds.index("change-requested")
    assert ctx.exo.confirmed is False                      # only for that action
    assert [v["status"] for v in _events(ctx, "verdict")] == ["succeeded"]
    assert RunRecord.open(ctx.record.path).run()["status"] == "succeeded"
    assert outcome.button.disabled
    assert outcome.button.description.startswith("Applied: confirmed by Ada Lovelace at ")


def test_a_second_click_does_nothing(step):
    ctx, _ = step()
    _, outcome = _cleanup_offer(ctx)
    outcome.click()
    events = len(ctx.record.events())
    assert outcome.click()[0] == "succeeded"
    assert len(ctx.record.events()) == events


def test_clicking_before_the_verdict_cell_runs_gives_that_cell_the_applied_verdict(step):
    ctx, _ = step()
    _, outcome = _cleanup_offer(ctx)
    outcome.click()                                       # cell by cell
    assert ctx.conclude(*outcome.verdict) == "succeeded"
    assert [v["status"] for v in _events(ctx, "verdict")] == ["succeeded"]


def test_a_plan_that_changed_after_it_was_shown_is_not_applied(step):
    ctx, state = step()
    plan, outcome = _cleanup_offer(ctx)
    names = _seppmail_names(state)
    plan.removals[0].obj["Guid"] = "00000000-0000-0000-0000-000000000000"
    status, message = outcome.click()
    assert status == "failed"
    assert message.startswith("Applying the plan stopped: PlanChanged: the plan changed "
                              "after it was shown")
    assert _events(ctx, "confirmation") == [] and _seppmail_names(state) == names


def test_a_failure_while_applying_becomes_the_verdict_and_confirmation_is_restored(step):
    ctx, _ = step()
    seen = []

    def apply(confirmed):
        if confirmed:
            seen.append(ctx.exo.confirmed)
            raise RuntimeError("boom")
        return "planned", "would do one thing"

    outcome = widgets.confirm(ctx, apply, summary="one thing", objects=["x"], live=True)
    assert outcome.click() == ("failed", "Applying the plan stopped: RuntimeError: boom. "
                               "Look at the tenant as it is now (run the notebook "
                               "again) before anything else.")
    assert seen == [True] and ctx.exo.confirmed is False


def test_without_a_frontend_the_parameter_decides_and_no_button_exists(step):
    ctx, state = step()
    names = _seppmail_names(state)
    _, outcome = _cleanup_offer(ctx, live=False)
    assert outcome.button is None and outcome.state == widgets.NOT_NEEDED
    assert outcome.verdict == ("planned", "Would remove 1 outbound connector, 1 inbound "
                               "connector, rules first, after a backup. Nothing was "
                               "changed (confirm=False).")
    assert _seppmail_names(state) == names


def test_confirm_true_applies_at_once_and_records_the_parameter_as_confirmation(step):
    ctx, state = step(confirm=True)
    _, outcome = _cleanup_offer(ctx, live=True)
    assert outcome.button is None and outcome.verdict[0] == "succeeded"
    confirmation, = _events(ctx, "confirmation")
    assert confirmation["via"] == "parameter confirm=True"
    assert _seppmail_names(state) == []


def test_a_plan_that_waits_for_another_step_shows_no_button(step):
    ctx, _ = step("04-configure")
    outcome = widgets.confirm(ctx, lambda confirmed: ("planned", "would create"),
                              summary="would create", objects=["connectors"],
                              waits_for="step 3 (old SEPPmail objects remain)", live=True)
    assert outcome.button is None and ctx.waiting() == []


def test_a_verdict_cell_run_twice_records_one_verdict(step):
    ctx, _ = step()
    _, outcome = _cleanup_offer(ctx)
    outcome.click()
    ctx.conclude(*outcome.verdict)
    assert ctx.conclude("failed", "ignored: concluded already") == "succeeded"
    assert len(_events(ctx, "verdict")) == 1


def test_a_rerun_settles_the_waiting_step_as_planned_and_keeps_the_tenant(step, reports):
    first, state = step(sandbox_state=None)
    _, outcome = _cleanup_offer(first)
    first.conclude(*outcome.verdict)
    namespace = dict(CONTOSO, sandbox_state="", ctx=first)

    values = widgets.reuse_tenant(namespace)

    assert values["sandbox_state"] == str(state)
    assert outcome.state == widgets.WITHDRAWN and outcome.button.disabled
    assert outcome.button.description == "Not applied: the notebook was run again"
    assert [v["status"] for v in _events(first, "verdict")] == ["planned"]
    assert namespace["sandbox_state"] == ""               # the notebook's own is untouched


def test_a_rerun_does_not_lend_the_tenant_to_another_scenario(step):
    first, _ = step()
    namespace = dict(CONTOSO, sandbox_state="", scenario="legacy-parallel", ctx=first)
    assert widgets.reuse_tenant(namespace)["sandbox_state"] == ""


def test_cleanup_run_again_on_the_same_tenant_sees_nothing_left_and_offers_nothing(step):
    first, state = step()
    _, outcome = _cleanup_offer(first)
    outcome.click()
    again = widgets.reuse_tenant(dict(CONTOSO, sandbox_state="", ctx=first))
    second, _ = step(sandbox_state=again["sandbox_state"])

    plan, outcome = _cleanup_offer(second)

    assert plan.empty and outcome.button is None
    assert outcome.verdict == ("succeeded", "Nothing to remove: no SEPPmail rule or "
                               "connector is left.")
    assert _events(second, "change-requested") == []


def test_a_step_left_after_its_button_was_used_keeps_the_applied_verdict(step):
    ctx, _ = step()
    _, outcome = _cleanup_offer(ctx)
    outcome.click()                                   # before the verdict cell ran
    ctx.settle("the notebook was run again")
    ctx.settle("the kernel stopped before a decision")    # at exit: nothing more
    assert [v["status"] for v in _events(ctx, "verdict")] == ["succeeded"]
    assert _events(ctx, "step-abandoned") == []
    assert ctx.record.run()["status"] == "succeeded"
    assert verify(ctx.record.path).ok


def test_a_step_left_with_neither_plan_nor_verdict_is_abandoned_once(step):
    ctx, _ = step()
    ctx.settle("the notebook was run again")
    ctx.settle("the kernel stopped before a decision")
    assert _events(ctx, "step-abandoned") == [
        {"step": "03-cleanup", "reason": "the notebook was run again"}]
    assert ctx.record.run()["status"] == "failed"
    assert verify(ctx.record.path).ok


# -- step 1's form ----------------------------------------------------------------


def _form(**values):
    namespace = dict(CONTOSO, backend="sandbox", scenario="legacy-inline",
                     tenant_id="", **values)
    return namespace, widgets.parameter_form(namespace, live=True)


def test_the_form_starts_from_the_parameters_cell_and_is_valid():
    namespace, form = _form()
    assert form.errors == {}
    assert form.values()["domains"] == ["contoso.ch", "contoso-group.ch"]
    assert form.inputs["region"].value == "ch"


def test_each_field_is_labelled_in_full_by_a_label_that_wraps():
    _, form = _form()
    labels = [row.children[0].value for row in form.box.children[1:-1]]
    assert labels[:2] == [
        '<div class="runbook-label" style="line-height: 1.3; white-space: normal; '
        'padding: 4px 0">Tenant (&lt;name&gt; of &lt;name&gt;.onmicrosoft.com)</div>',
        '<div class="runbook-label" style="line-height: 1.3; white-space: normal; '
        'padding: 4px 0">Domains (one per line; the first builds the connectors)'
        '</div>']
    assert len(labels) == len(widgets.FORM_FIELDS)


def test_a_bad_value_is_marked_as_typed_and_the_namespace_keeps_the_valid_one():
    namespace, form = _form()
    form.inputs["tenant"].value = "Contoso Ltd"
    assert form.errors == {"tenant": "the <name> of <name>.onmicrosoft.com: lower-case "
                                     "letters, digits and '-', at most 63 characters"}
    assert "✗" in form.notes["tenant"].value and form.notes["region"].value == "✓"
    assert namespace["tenant"] == "contoso"
    assert "Not valid yet" in form.status.value


def test_valid_values_go_into_the_namespace_for_the_cells_below():
    namespace, form = _form()
    form.inputs["domains"].value = "fabrikam.com\n fabrikam.ch,"
    form.inputs["tenant"].value = "fabrikam"
    form.inputs["routing"].value = "parallel"
    assert form.errors == {}
    assert (namespace["tenant"], namespace["domains"], namespace["routing"]) == (
        "fabrikam", ["fabrikam.com", "fabrikam.ch"], "parallel")


def test_each_field_shows_its_own_problem():
    namespace, form = _form()
    form.inputs["domains"].value = "contoso.onmicrosoft.com"
    form.inputs["tenant_id"].value = "12345"
    assert form.errors == {
        "domains": "a customer domain; *.onmicrosoft.com cannot be routed via "
                   "SEPPmail.cloud",
        "tenant_id": "the tenant ID, a GUID such as 2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"}
    assert namespace["domains"] == CONTOSO["domains"]


def test_no_form_without_a_frontend():
    namespace = dict(CONTOSO)
    assert widgets.parameter_form(namespace, live=False) is None
    assert namespace == CONTOSO


def test_domains_can_be_typed_one_per_line_or_separated():
    assert widgets.parse_domains("a.ch\nb.ch, c.ch;d.ch  e.ch\n") == [
        "a.ch", "b.ch", "c.ch", "d.ch", "e.ch"]


# -- step 5's progress ---------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_the_progress_bar_counts_the_time_left_down_between_looks():
    clock = _Clock()
    bar = widgets.MailflowProgress(600, live=True, clock=clock, sleep=clock.sleep)
    status = mailflow.FlowStatus(inbound="<a@contoso.ch>", polls=1, messages_seen=4)
    bar(15.0, 600, status)
    assert bar.bar.value == 15.0
    assert bar.label.value == ("poll 1: 4 messages, inbound seen, outbound not yet; "
                               "9 min 45 s left")
    bar.sleep(2.5)
    assert clock.slept == [1.0, 1.0, 0.5]
    assert bar.label.value.endswith("; 9 min 43 s left")   # 17.5 s of 600
    bar.finish(status)
    assert (bar.bar.value, bar.bar.bar_style) == (600, "warning")


def test_without_a_frontend_progress_is_one_printed_line_per_look(capsys):
    bar = widgets.MailflowProgress(60, live=False)
    bar(59.6, 60, mailflow.FlowStatus(polls=3, messages_seen=0))
    assert capsys.readouterr().out == ("poll 3: 0 messages, inbound not yet, outbound "
                                       "not yet; 1 s left\n")


def test_no_connector_yet_means_no_wait(step):
    ctx, _ = step("05-verify-mailflow")
    status = widgets.wait_for_mail(ctx, since=None, inbound_name="x", outbound_name="y",
                                   live=True)
    assert status.polls == 0 and not status.confirmed


# -- a step run twice, as the notebooks run (point 5) ---------------------------------


def _notebook(step_name, tmp_path, state_file, n):
    out = tmp_path / f"{step_name}-{n}.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{step_name}.ipynb"), str(out), kernel_name="python3",
        parameters=dict(CONTOSO, sandbox_state=str(state_file), confirm=True,
                        module_version="2.0.2"),
        progress_bar=False, cwd=str(NOTEBOOKS))
    doc = json.loads(out.read_text(encoding="utf-8"))
    outputs = [o for c in doc["cells"] for o in c.get("outputs", [])]
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get(
        "text/plain", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
        for o in outputs)


@pytest.mark.slow
def test_steps_run_twice_see_the_tenant_as_it_is_and_do_nothing_again(make_tenant,
                                                                     reports, tmp_path):
    state = make_tenant("legacy-inline")
    _notebook("02-install-module", tmp_path, state, 0)
    _notebook("03-cleanup", tmp_path, state, 1)
    cleaned = state_mod.load(state)
    cleanup_again = _notebook("03-cleanup", tmp_path, state, 2)
    assert state_mod.load(state)["inbound_connectors"] == cleaned["inbound_connectors"]
    _notebook("04-configure", tmp_path, state, 3)
    configured = state_mod.load(state)

    configure_again = _notebook("04-configure", tmp_path, state, 4)

    assert "Nothing to remove: no SEPPmail rule or connector is left." in cleanup_again
    assert "[SEPPmail.cloud] Inbound-InLine, [SEPPmail.cloud] Outbound-InLine exist " \
           "with the CBC values" in configure_again
    assert "are in place as module 2.0.2 creates them" in configure_again
    again = state_mod.load(state)
    for key in ("inbound_connectors", "outbound_connectors", "transport_rules"):
        assert again[key] == configured[key], key


# -- what each notebook says first and last (issue 9, point 2) -----------------------


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_each_notebook_says_what_it_does_changes_needs_and_ends_with_its_verdict(path):
    cells = json.loads(path.read_text("utf-8"))["cells"]
    intro = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown"
    assert [w in intro for w in ("What it does.", "What it changes.", "Have at hand.")
            ] == [True, True, True]
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "code"
    assert last.splitlines()[-1].startswith("ctx.conclude(*"), last
