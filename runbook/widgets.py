"""Widgets for an engineer stepping through the runbook in JupyterLab.

* `parameter_form(namespace)` - step 1's tenant parameters as a form that
  validates as you type (`runbook.params.validate`) and, once every value is
  valid, puts the values into the notebook's namespace for the cells below;
* `confirm(ctx, apply, summary=, objects=)` - the "Apply this plan" button
  under a plan: it records who confirmed which plan and when, then applies
  exactly the plan shown, not one computed again;
* `wait_for_mail(ctx, ...)` - step 5's wait, with a progress bar and the
  time left;
* `interactive(ctx)` - the step context of a live session (`LiveStep`): its
  verdict waits for a pending confirmation instead of closing the step under
  the button; `reuse_tenant(namespace)` keeps a sandbox tenant across reruns
  of a notebook in one kernel, as a real tenant would be kept.

Where no person's frontend runs the cell (papermill, nbval, plain Python),
each of these is plain output and the notebook behaves as it always did: no
form, changes only with the `confirm` parameter, one printed line per look
at the message trace. Nothing depends on a click there.

A live frontend is recognised by the execute request running the cell:
JupyterLab, like every frontend a person types into, sends `allow_stdin`
true because it can answer `input()`; papermill (nbclient) and nbval send
false. `RUNBOOK_WIDGETS=off` or `=on` overrides that guess.

Errors: `PlanChanged` (a RuntimeError) when the plan under a button is no
longer the plan that was shown; a failure while applying becomes the step's
failed verdict, with the error's text, because a widget callback has no cell
that could show a traceback.
"""

from __future__ import annotations

import atexit
import dataclasses
import getpass
import hashlib
import json
import logging
import math
import os
import re
import time
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from runbook import mailflow, seppmail, visible
from runbook import params as params_mod
from runbook.notebook import (FAILED, PASSED, PLANNED, StepContext, StepFailed, show,
                              show_verdict)

log = logging.getLogger(__name__)

ENV = "RUNBOOK_WIDGETS"
WAITING, APPLYING, APPLIED, WITHDRAWN, NOT_NEEDED = (
    "waiting", "applying", "applied", "withdrawn", "not needed")


class PlanChanged(RuntimeError):
    """The plan under a confirmation button differs from the plan that was shown."""

    def __init__(self, shown_sha256: str, now_sha256: str):
        self.shown_sha256 = shown_sha256
        self.now_sha256 = now_sha256
        super().__init__(f"the plan changed after it was shown (sha256 "
                         f"{shown_sha256[:12]} shown, {now_sha256[:12]} now); nothing "
                         "was changed: run the plan cell again")


# -- is a person's frontend attached? -----------------------------------------


def frontend_is_live() -> bool:
    """True while a person's notebook frontend runs the current cell."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("0", "off", "no", "false"):
        return False
    if forced in ("1", "on", "yes", "true"):
        return True
    kernel = _kernel()
    if kernel is None:
        return False
    parent = kernel.get_parent("shell") or {}
    return (parent.get("header", {}).get("msg_type") == "execute_request"
            and bool(parent.get("content", {}).get("allow_stdin")))


def _kernel():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def _live(live: bool | None) -> bool:
    return frontend_is_live() if live is None else live


def _display(obj) -> None:
    from IPython.display import display

    display(obj)


# -- step 1: the parameter form -------------------------------------------------

FORM_FIELDS = ("tenant", "domains", "region", "routing", "tenant_id", "operator",
               "backend", "scenario")
_LABELS = {
    "tenant": "Tenant (<name> of <name>.onmicrosoft.com)",
    "domains": "Domains (one per line; the first builds the connectors)",
    "region": "SEPPmail.cloud region",
    "routing": "Routing mode",
    "tenant_id": "Tenant ID (optional check)",
    "operator": "Who runs this (empty: your login)",
    "backend": "Backend (sandbox: a simulated tenant)",
    "scenario": "Sandbox scenario",
}


def parse_domains(text: str) -> list[str]:
    """Domains typed one per line, or separated by commas, semicolons or spaces."""
    return [d for d in re.split(r"[\s,;]+", text) if d]


class ParameterForm:
    """The tenant parameters of step 1 as a form checked on every keystroke.

    The values are checked one by one against the notebook's other values
    (so each field shows its own problem) and then together. While any is
    invalid, the namespace keeps its last valid values; once all are valid
    they go into the namespace, where `open_step` takes them, validates them
    again and records them in the run, as it does a batch run's parameters.
    """

    def __init__(self, namespace: dict):
        import ipywidgets as w

        self.namespace = namespace
        self.inputs = {name: self._input(w, name) for name in FORM_FIELDS}
        self.notes = {name: w.HTML() for name in FORM_FIELDS}
        self.status = w.HTML()
        self.errors: dict[str, str] = {}
        rows = [w.HBox([_label(w, _LABELS[n]), self.inputs[n], self.notes[n]])
                for n in FORM_FIELDS]
        self.box = w.VBox([w.HTML("<b>Tenant parameters</b>"), *rows, self.status])
        self.box.add_class("runbook-parameter-form")
        for widget in self.inputs.values():
            widget.observe(self._changed, names="value")
        self.check()

    def _input(self, w, name: str):
        value = self.namespace.get(name, "")
        layout = w.Layout(width="28em")
        if name == "domains":
            items = value if isinstance(value, (list, tuple)) else [value]
            return w.Textarea(value="\n".join(map(str, items)), rows=3, layout=layout)
        choices = {"region": seppmail.REGIONS, "routing": seppmail.ROUTING_MODES,
                   "backend": params_mod.BACKENDS}.get(name)
        if name == "scenario":
            from runbook.sandbox import scenarios

            choices = tuple(scenarios.names())
        if choices:
            options = list(choices) + ([value] if value not in choices else [])
            return w.Dropdown(options=options, value=value, layout=layout)
        placeholder = {"operator": _login(), "tenant_id": "a GUID"}.get(name, "")
        return w.Text(value=str(value), placeholder=placeholder, layout=layout,
                      continuous_update=True)

    def values(self) -> dict:
        """The form's values, typed as the parameters cell would hold them."""
        found = {name: widget.value for name, widget in self.inputs.items()}
        found["domains"] = parse_domains(found["domains"])
        return found

    def _changed(self, change) -> None:
        self.check()

    def check(self) -> dict[str, str]:
        """Validate, mark each field, update the namespace if all is valid; the errors."""
        base = {n: self.namespace[n] for n in params_mod.NAMES if n in self.namespace}
        values = self.values()
        errors: dict[str, str] = {}
        for name in FORM_FIELDS:
            _collect(errors, {**base, name: values[name]})
        if not errors:
            _collect(errors, {**base, **values})
        self.errors = errors
        for name in FORM_FIELDS:
            self.notes[name].value = (f'<span style="color:#b3261e">✗ '
                                      f"{visible.html(errors[name])}</span>"
                                      if name in errors else "✓")
        if errors:
            self.status.value = ("<b>✗ Not valid yet.</b> The cells below still use "
                                 "the last valid values.")
        else:
            self.namespace.update(values)
            tenant = visible.html(values["tenant"])
            self.status.value = ("<b>✓ Valid.</b> Now run the cells below this one "
                                 "(Run ▸ Run Selected Cell and All Below) to check "
                                 f"tenant <code>{tenant}</code>.")
        return errors


def _label(w, text: str):
    """A label that wraps: ipywidgets' Label cuts a long one off with "…"."""
    return w.HTML(f'<div class="runbook-label" style="line-height: 1.3; '
                  f'white-space: normal; padding: 4px 0">{visible.html(text)}</div>',
                  layout=w.Layout(width="22em"))


def _collect(errors: dict[str, str], values: dict) -> None:
    try:
        params_mod.validate(**values)
    except params_mod.ParameterError as exc:
        errors.setdefault(exc.name, exc.allowed)


def parameter_form(namespace: dict, *,
                   live: bool | None = None) -> ParameterForm | None:
    """Show the form in a live frontend; elsewhere the parameters cell rules alone."""
    if not _live(live):
        return None
    form = ParameterForm(namespace)
    _display(form.box)
    return form


# -- the confirmation button -----------------------------------------------------


class Confirmation:
    """A plan shown under an "Apply this plan" button, and what became of it.

    `apply(confirmed)` does the step's work for this one plan and returns its
    verdict `(status, message)`; with `confirmed` false it changes nothing
    and says what it would do. `verdict` is the latest: the applied one once
    the button was used, else the plan's.
    """

    def __init__(self, ctx, apply: Callable[[bool], Any], *, summary: str,
                 objects: list, verdict: tuple[str, str]):
        self.ctx = ctx
        self.apply = apply
        self.summary = summary
        self.objects = list(objects)
        self.plan_sha256 = plan_digest(self.objects)
        self.verdict = verdict
        self.state = NOT_NEEDED
        self.confirmed_by = ""
        self.confirmed_at = ""
        self.button = None
        self.output = None

    def offer(self) -> None:
        """Show the plan's objects and the button; wait for the click."""
        import ipywidgets as w

        items = "".join(f"<li>{visible.html(describe(o))}</li>" for o in self.objects)
        heading = w.HTML(f"<b>{visible.html(self.summary)}</b><ul>{items}</ul>")
        self.button = w.Button(description="Apply this plan", button_style="danger",
                               icon="check", layout=w.Layout(width="auto"),
                               tooltip="Records you as the one who confirmed, then "
                                       "makes exactly the changes listed above")
        self.button.add_class("runbook-apply")
        self.output = w.Output()
        self.button.on_click(self._clicked)
        self.state = WAITING
        box = w.VBox([heading, self.button, self.output])
        box.add_class("runbook-confirmation")
        _display(box)

    def _clicked(self, _button=None) -> None:
        if self.state != WAITING:   # a second click queued behind the first
            return
        self.state = APPLYING
        self.button.disabled = True
        self.button.description = "Applying…"
        with self.output:
            self.verdict = self._apply_confirmed(via="button")
            _show_result(*self.verdict)
        self.state = APPLIED
        self.button.description = (f"Applied: confirmed by {self.confirmed_by} at "
                                   f"{self.confirmed_at}")
        self.button.button_style = "success" if self.verdict[0] == PASSED else "warning"
        if isinstance(self.ctx, LiveStep):
            self.ctx.confirmation_finished(self)

    def click(self) -> tuple[str, str]:
        """What the button does, for code and tests; returns the verdict."""
        self._clicked()
        return self.verdict

    def _apply_confirmed(self, *, via: str) -> tuple[str, str]:
        try:
            self.record_confirmation(via=via)
            return self._with_confirmation()
        except Exception as exc:  # a callback's traceback would reach nobody
            log.exception("applying the plan of %s failed", self.ctx.step)
            return FAILED, (f"Applying the plan stopped: {type(exc).__name__}: {exc}. "
                            "Look at the tenant as it is now (run the notebook again) "
                            "before anything else.")

    def record_confirmation(self, *, via: str) -> dict:
        """The audit's `confirmation` event: who, when, which plan (by its hash)."""
        now = plan_digest(self.objects)
        if now != self.plan_sha256:
            raise PlanChanged(self.plan_sha256, now)
        self.confirmed_by = operator(self.ctx.params)
        self.confirmed_at = _utc_now()
        return self.ctx.record.event(
            "confirmation", step=self.ctx.step, by=self.confirmed_by,
            at=self.confirmed_at, plan=self.summary, via=via,
            objects=[describe(o) for o in self.objects], plan_sha256=now)

    def _with_confirmation(self) -> tuple[str, str]:
        """Run `apply(True)` with the facade confirmed for this one action only."""
        exo = self.ctx.exo
        before = exo.confirmed
        exo.confirmed = True
        try:
            return _pair(self.apply(True))
        finally:
            exo.confirmed = before

    def withdraw(self, reason: str) -> None:
        if self.state == WAITING:
            self.state = WITHDRAWN
            self.button.disabled = True
            self.button.description = f"Not applied: {reason}"


def confirm(ctx, apply: Callable[[bool], Any], *, summary: str, objects: list,
            waits_for: str = "", live: bool | None = None) -> Confirmation:
    """Do the step's work as its parameters say, or offer the plan under a button.

    A run with `confirm = True` records the confirmation (via the parameter)
    and applies at once, as in a batch run. A run without it applies nothing;
    in a live frontend, when the plan has something to do, the button appears
    under it. Nothing to do (a step run again on a tenant that is done) or a
    blocked plan shows no button: its verdict says why. `waits_for` names what
    must happen first (another step); it is shown in place of the button.
    """
    confirmed = bool(ctx.params.confirm)
    if confirmed and objects:
        c = Confirmation(ctx, apply, summary=summary, objects=objects,
                         verdict=(PLANNED, summary))
        c.record_confirmation(via="parameter confirm=True")
        c.verdict = _pair(apply(True))
        c.state = APPLIED
        return c
    c = Confirmation(ctx, apply, summary=summary, objects=objects,
                     verdict=_pair(apply(confirmed)))
    if _live(live) and not confirmed and objects and c.verdict[0] == PLANNED:
        if waits_for:
            _display_html(f"<b>No “Apply this plan” yet:</b> it waits for "
                          f"{visible.html(waits_for)}. Then run this notebook again.")
            return c
        c.offer()
        if isinstance(ctx, LiveStep):
            ctx.confirmations.append(c)
    return c


def _display_html(text: str) -> None:
    from IPython.display import HTML

    _display(HTML(text))


def plan_digest(objects: list) -> str:
    """SHA-256 of the plan's objects, every property included, in a stable form."""
    data = [dataclasses.asdict(o) if dataclasses.is_dataclass(o) else o
            for o in objects]
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def describe(obj) -> str:
    """One line for an object of a plan: what will happen to what."""
    from runbook.inventory import KIND_LABELS

    if hasattr(obj, "kind") and hasattr(obj, "name"):
        return f"remove {KIND_LABELS.get(obj.kind, obj.kind)} {obj.name!r}"
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict):
        return f"recreate {KIND_LABELS.get(obj[0], obj[0])} {obj[1].get('Name')!r}"
    if hasattr(obj, "summary"):
        return obj.summary()
    return str(obj)


def operator(p) -> str:
    """Who confirms: the `operator` parameter, else the login name."""
    return p.operator or _login()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        return f"uid {os.getuid()}"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _show_result(status: str, message: str) -> None:
    """The outcome right under the button; the verdict cell gives the step's verdict."""
    from IPython import get_ipython

    if get_ipython() is None:
        print(f"Result: {status}. {message}")
        return
    from IPython.display import Markdown

    _display(Markdown(f"**Result: {visible.html(status)}.** {visible.html(message)}"))


def _pair(verdict) -> tuple[str, str]:
    status, message = verdict
    return str(status), str(message)


# -- the step context of a live session -------------------------------------------


class Pending(str):
    """The status a held verdict cell returns: "planned", shown as nothing.

    The cell's value would stay on screen as ``'planned'`` under the verdict
    that the click later writes into the area above it ("✅ passed").
    """

    def _ipython_display_(self) -> None:
        pass


@dataclasses.dataclass(eq=False)
class LiveStep(StepContext):
    """A step opened in a live frontend.

    Its verdict cell may run (Run All) before the engineer has decided about
    the plan: then the verdict shows as waiting, the step stays open, and the
    click concludes it in that same place with the applied result. A verdict
    cell run a second time shows the verdict again instead of recording one.
    """

    confirmations: list = dataclasses.field(default_factory=list)
    held: tuple[str, str] | None = None
    verdict_area: Any = None

    def waiting(self) -> list[Confirmation]:
        return [c for c in self.confirmations if c.state in (WAITING, APPLYING)]

    def conclude(self, status: str, message: str) -> str:
        if self.outcome:
            return self._concluded_already()
        if self.waiting():
            return self._hold(status, message)
        return super().conclude(status, message)

    def _hold(self, status: str, message: str) -> str:
        import ipywidgets as w

        self.held = (status, message)
        self.verdict_area = w.Output()
        self.verdict_area.add_class("runbook-verdict")
        _display(self.verdict_area)
        with self.verdict_area:
            show_verdict(PLANNED, f"{message}\nWaiting for your decision: "
                         "“Apply this plan” above makes exactly these changes, and "
                         "this verdict then follows. Nothing was changed yet.")
        return Pending(PLANNED)

    def _concluded_already(self) -> str:
        status, message = self.outcome["status"], self.outcome["message"]
        show_verdict(status, message + "\n(This step concluded already; run the "
                     "notebook again to look at the tenant anew.)")
        if status == FAILED:
            raise StepFailed(message)
        return status

    def confirmation_finished(self, c: Confirmation) -> None:
        """After a click: conclude now if the verdict cell has run already."""
        if self.held is None or self.waiting() or self.outcome:
            return
        self.verdict_area.clear_output()
        with self.verdict_area:
            self._conclude_quietly(*c.verdict)

    def settle(self, reason: str) -> None:
        """End this step before another takes its place (a rerun, the kernel's end).

        A plan applied by its button gives the step its verdict even when the
        verdict cell never ran; a plan still waiting gives the planned one
        the verdict cell held; with neither, the step is recorded abandoned
        (failed), once: the record is sealed after that.
        """
        if self.outcome:
            return
        for c in self.waiting():
            c.withdraw(reason)
        applied = [c for c in self.confirmations if c.state == APPLIED]
        if applied or self.held is not None:
            self._conclude_quietly(*(applied[-1].verdict if applied else self.held))
            return
        self.record.event("step-abandoned", step=self.step, reason=reason)
        self.outcome = {"status": FAILED, "message": f"abandoned: {reason}"}
        self.close()

    def _conclude_quietly(self, status: str, message: str) -> None:
        try:
            super().conclude(status, message)
        except StepFailed:
            pass   # shown by the verdict; the record says failed


_LIVE_STEPS: list[weakref.ref] = []


def interactive(ctx: StepContext, *, live: bool | None = None) -> StepContext:
    """The context for the rest of the notebook: a LiveStep where a person is."""
    if not _live(live) or isinstance(ctx, LiveStep):
        return ctx
    values = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(StepContext)}
    step = LiveStep(**values)
    _LIVE_STEPS.append(weakref.ref(step))
    return step


def reuse_tenant(namespace: dict) -> dict:
    """The notebook's values; on a rerun in one kernel, the same sandbox tenant.

    A sandbox stands for one tenant, and a tenant does not come back fresh
    when a step runs again: a rerun of the notebook must find it as the last
    run left it (issue 9, point 5). So a previous run's context in this
    namespace lends its sandbox state file, where the parameters name none
    and the tenant and scenario are the same. The previous run, if it has no
    verdict yet, is ended first.
    """
    previous = namespace.get("ctx")
    if not isinstance(previous, StepContext):
        return namespace
    if isinstance(previous, LiveStep):
        previous.settle("the notebook was run again")
    values = dict(namespace)
    same = (previous.params.backend == "sandbox" == values.get("backend", "sandbox")
            and not values.get("sandbox_state") and not values.get("run_dir")
            and previous.params.tenant == values.get("tenant")
            and previous.params.scenario == values.get("scenario", "legacy-inline"))
    if same and previous.sandbox_state:
        values["sandbox_state"] = previous.sandbox_state
        show(f"Same sandbox tenant as the previous run in this kernel: "
             f"{previous.sandbox_state}")
    return values


@atexit.register
def _settle_at_exit() -> None:
    for ref in _LIVE_STEPS:
        step = ref()
        if step is not None:
            try:
                step.settle("the kernel stopped before a decision")
            except Exception:   # the interpreter is ending; log and go on
                log.exception("could not settle %s", step.step)


# -- step 5: the wait, with a progress bar ----------------------------------------


class MailflowProgress:
    """The progress of step 5's wait: a bar and the time left, or printed lines.

    Passed to `mailflow.wait` as `progress` (after each look at the trace)
    and `sleep` (between looks), so the time left counts down each second
    rather than once per poll.
    """

    def __init__(self, total_s: float, *, live: bool, clock=time.monotonic,
                 sleep=time.sleep):
        self.total_s = float(total_s)
        self.live = live
        self.clock = clock
        self._sleep = sleep
        self.reported = (0.0, clock())   # elapsed as the wait last said, and when
        self.head = "looking at the message trace"
        self.bar = self.label = None
        if live:
            import ipywidgets as w

            self.bar = w.FloatProgress(value=0.0, min=0.0, max=max(self.total_s, 1.0),
                                       description="Waiting", bar_style="info")
            self.label = w.HTML("Looking at the message trace…")
            box = w.VBox([self.bar, self.label])
            box.add_class("runbook-progress")
            _display(box)

    def __call__(self, elapsed: float, total: float, status) -> None:
        self.head = progress_head(status)
        self.reported = (elapsed, self.clock())
        line = f"{self.head}; {_left(total - elapsed)}"
        if not self.live:
            print(line, flush=True)
            return
        self.bar.value = min(max(elapsed, 0.0), self.bar.max)
        self.label.value = visible.html(line)

    def sleep(self, seconds: float) -> None:
        end = self.clock() + max(0.0, seconds)
        while (left := end - self.clock()) > 0:
            self._sleep(min(1.0, left))
            if self.live:
                elapsed = self.reported[0] + self.clock() - self.reported[1]
                self.bar.value = min(elapsed, self.bar.max)
                self.label.value = visible.html(
                    f"{self.head}; {_left(self.total_s - elapsed)}")

    def finish(self, status) -> None:
        if not self.live:
            return
        self.bar.value = self.bar.max
        self.bar.bar_style = ("success" if status.confirmed else
                              "danger" if status.looping else "warning")
        self.bar.description = "Done"


def progress_head(status) -> str:
    """What the last look at the trace found, in the words of mailflow's printout."""
    return (f"poll {status.polls}: {status.messages_seen} messages, inbound "
            f"{'seen' if status.inbound else 'not yet'}, outbound "
            f"{'seen' if status.outbound else 'not yet'}")


def _left(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))   # a countdown shows 1 s until it is over
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest:02d} s left" if minutes else f"{rest} s left"


def wait_for_mail(ctx, *, since: datetime | None, inbound_name: str,
                  outbound_name: str, live: bool | None = None):
    """Step 5's wait: `mailflow.run` as it is, or in a live frontend with a bar.

    The live branch calls `mailflow.wait` with the same wait and poll times
    as `mailflow.run`, because `run` takes no progress or sleep hook; the
    two must be kept alike until it does.
    """
    if not _live(live):
        return mailflow.run(ctx.exo, since=since, inbound_name=inbound_name,
                            outbound_name=outbound_name, params=ctx.params)
    if since is None:
        return mailflow.FlowStatus()
    p = ctx.params
    wait_s = p.wait_minutes * 60 if p.confirm else 0.0
    poll = min(p.poll_seconds, 1.0) if p.backend == "sandbox" else p.poll_seconds
    bar = MailflowProgress(wait_s, live=True)
    status = mailflow.wait(ctx.exo, since=since - timedelta(seconds=1),
                           inbound_name=inbound_name, outbound_name=outbound_name,
                           wait_seconds=wait_s, poll_seconds=poll, progress=bar,
                           sleep=bar.sleep)
    bar.finish(status)
    return status
