"""The chain runner: the five step notebooks, executed with papermill, one record.

Each step's executed notebook lands in the run folder, failed ones included.
The chain stops at the first step that fails; `resume()` continues a stopped
run from that step with the same parameters.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import papermill
from papermill.exceptions import PapermillExecutionError

from runbook import params as params_mod
from runbook.audit import RunRecord
from runbook.notebook import default_reports_dir

log = logging.getLogger(__name__)

STEPS = (
    "01-prerequisites",
    "02-install-module",
    "03-cleanup",
    "04-configure",
    "05-verify-mailflow",
)
ROLLBACK = "90-rollback"


def notebooks_dir() -> Path:
    if os.environ.get("RUNBOOK_NOTEBOOKS"):
        return Path(os.environ["RUNBOOK_NOTEBOOKS"])
    return Path(__file__).resolve().parent.parent / "notebooks"


def run(p: params_mod.RunParameters, *, reports_dir: Path | None = None,
        steps: tuple[str, ...] = STEPS, progress=print) -> RunRecord:
    """Execute the steps in order into a new run folder; return its record."""
    record = RunRecord.create(reports_dir or default_reports_dir(), p.tenant,
                              parameters=p.as_dict(), operator=p.operator or None,
                              backend=p.backend, sandbox_state=p.sandbox_state or None)
    return _execute(record, p, steps, progress)


def resume(run_dir: Path, *, progress=print) -> RunRecord:
    """Continue a stopped run from the step that stopped it."""
    record = RunRecord.open(run_dir)
    run_info = record.run()
    done = {s["name"] for s in run_info.get("steps", []) if s.get("status") == "succeeded"}
    remaining = tuple(s for s in STEPS if s not in done)
    if not remaining:
        raise ValueError(f"{run_dir}: every step succeeded already; nothing to resume")
    values = dict(run_info["parameters"])
    p = params_mod.validate(**values)
    if (record.path / "manifest.json").exists():
        record.reopen("resume")          # the finished attempt moves to attempts/N
    for step in run_info.get("steps", []):
        if step.get("status") == "running":   # the process died inside this step
            record.step_finished(step["name"], "failed", error={
                "cell": None, "ename": "Interrupted",
                "evalue": "the run stopped inside this step"})
    record.event("run-resumed", from_step=remaining[0])
    record.update_run(status="running")
    return _execute(record, p, remaining, progress)


def _execute(record: RunRecord, p: params_mod.RunParameters, steps, progress) -> RunRecord:
    outcome = "succeeded" if p.confirm else "planned"
    for step in steps:
        status = _run_step(record, p, step, progress)
        if status == "failed":
            outcome = "failed"
            break
        if status == "planned":
            outcome = "planned" if outcome != "failed" else outcome
    record.finish(outcome)
    progress(f"run {outcome}: {record.path}")
    return record


def rollback(run_dir: Path, *, confirm: bool, reports_dir: Path | None = None,
             progress=print) -> RunRecord:
    """Undo a run in a new run folder of its own (the undone one stays sealed)."""
    source = RunRecord.open(run_dir)
    info = source.run()
    values = dict(info["parameters"], confirm=confirm, run_dir="",
                  sandbox_state=info.get("sandbox_state") or "")
    p = params_mod.validate(**values)
    reports = reports_dir or Path(run_dir).resolve().parent.parent
    record = RunRecord.create(reports, p.tenant, parameters=p.as_dict(),
                              operator=p.operator or None, backend=p.backend,
                              sandbox_state=p.sandbox_state or None)
    record.update_run(rollback_of=str(Path(run_dir).resolve()))
    status = _run_step(record, p, ROLLBACK, progress,
                       extra={"source_run": str(Path(run_dir).resolve())})
    outcome = status if status == "failed" or confirm else "planned"
    record.finish(outcome)
    progress(f"rollback {outcome}: {record.path}")
    return record


def _run_step(record: RunRecord, p, step: str, progress, extra=None) -> str:
    source = notebooks_dir() / f"{step}.ipynb"
    target = record.path / "notebooks" / f"{step}.ipynb"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    parameters = p.as_dict()
    parameters["run_dir"] = str(record.path)
    parameters["sandbox_state"] = record.run().get("sandbox_state") or ""
    parameters.update(extra or {})
    record.step_started(step, f"notebooks/{step}.ipynb")
    progress(f"{step} ...")
    started = time.monotonic()
    error = None
    try:
        papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                   kernel_name="python3", progress_bar=False,
                                   log_output=False, cwd=str(source.parent))
    except PapermillExecutionError as exc:
        error = {"cell": exc.cell_index, "ename": exc.ename, "evalue": exc.evalue}
    except Exception as exc:  # kernel died, notebook unreadable: still a failed step
        error = {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
    if target.exists():
        os.chmod(target, 0o600)
    status = "failed" if error else _verdict(record, step)
    record.step_finished(step, status, error=error)
    progress(f"{step} {status} ({time.monotonic() - started:.1f} s)"
             + (f": {error['ename']}: {error['evalue']}" if error else ""))
    return status


def _verdict(record: RunRecord, step: str) -> str:
    verdicts = [e for e in record.events()
                if e["kind"] == "verdict" and e["data"].get("step") == step]
    if not verdicts:
        return "failed"
    return verdicts[-1]["data"]["status"]
