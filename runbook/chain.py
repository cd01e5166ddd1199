"""The chain runner: the five step notebooks, executed with papermill, one record.

Each step's executed notebook lands in the run folder, failed ones included.
The chain stops at the first step that fails; `resume()` continues a stopped
run from that step with the same parameters.

Every notebook runs in a kernel reached over Unix sockets
(`runbook.kernels`). The steps of one run share one PowerShell session: the
chain starts the child, connects once and serves the session on a private
socket (`runbook.powershell.broker`) for as long as the steps run; each
kernel finds the socket in the environment variable `SOCKET_ENV`. Where that
session cannot be opened (no pwsh, the sign-in failed) the chain says why and
goes on: each step then opens a session of its own, and step 1 records the
failure where the engineer reads it.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import papermill
from papermill.exceptions import PapermillExecutionError

from runbook import audit, notebook
from runbook import params as params_mod
from runbook.audit import NotARunFolder, RunRecord
from runbook.batch import acquire_tenant_lock
from runbook.exchange import ExchangeOnline
from runbook.kernels import KERNEL_LOG_ENV, PAPERMILL_OPTIONS
from runbook.notebook import default_reports_dir
from runbook.powershell import PowerShellError
from runbook.powershell.broker import SOCKET_ENV, SessionBroker, serve

log = logging.getLogger(__name__)

STEPS = (
    "01-prerequisites",
    "02-install-module",
    "03-cleanup",
    "04-configure",
    "05-verify-mailflow",
)
ROLLBACK = "90-rollback"
# The run's reports folder, for its kernels: a step writes only into a run
# folder inside it (`runbook.notebook.open_run_dir`).
REPORTS_ENV = "RUNBOOK_REPORTS_DIR"


class NothingToResume(ValueError):
    """Every step of the run succeeded already."""


def notebooks_dir() -> Path:
    if os.environ.get("RUNBOOK_NOTEBOOKS"):
        return Path(os.environ["RUNBOOK_NOTEBOOKS"])
    return Path(__file__).resolve().parent.parent / "notebooks"


def run(p: params_mod.RunParameters, *, reports_dir: Path | None = None,
        steps: tuple[str, ...] = STEPS, progress=print) -> RunRecord:
    """Execute the steps in order into a new run folder; return its record.

    A second run on a tenant whose run is still going is refused
    (`runbook.batch.TenantBusy`, naming the first run's folder) before any
    folder is made.
    """
    # Absolute: the kernels run in notebooks/, not in the caller's folder.
    reports = Path(reports_dir or default_reports_dir()).resolve()
    with acquire_tenant_lock(reports, p.tenant) as lock:
        record = RunRecord.create(reports, p.tenant, parameters=p.as_dict(),
                                  operator=p.operator or None, backend=p.backend,
                                  sandbox_state=p.sandbox_state or None)
        lock.attach(record.path)
        return _execute(record, p, steps, progress)


def resume(run_dir: Path, *, progress=print) -> RunRecord:
    """Continue a stopped run from the step that stopped it."""
    record, values = _intact(run_dir)
    done = {name for name, status in record.chained_steps() if status == "succeeded"}
    remaining = tuple(s for s in STEPS if s not in done)
    if not remaining:
        raise NothingToResume(f"{run_dir}: every step succeeded already; nothing to "
                              "resume")
    p = params_mod.validate(**values)
    with acquire_tenant_lock(record.path.parent.parent, p.tenant) as lock:
        lock.attach(record.path)
        if (record.path / "manifest.json").exists():
            record.reopen("resume")      # the finished attempt moves to attempts/N
        # The process died inside this step.
        _fail_running(record, "Interrupted", "the run stopped inside this step")
        record.event("run-resumed", from_step=remaining[0])
        record.update_run(status="running")
        return _execute(record, p, remaining, progress)


def _execute(record: RunRecord, p: params_mod.RunParameters, steps, progress) -> RunRecord:
    outcome = "succeeded" if p.confirm else "planned"
    try:
        with _environment(REPORTS_ENV, str(record.path.parent.parent)), \
                shared_session(record, p, progress), \
                ThreadPoolExecutor(1, thread_name_prefix="runbook-pages") as pages:
            for step in steps:
                status = _run_step(record, p, step, progress)
                # Its HTML page is made while the next step runs; finish() only
                # renders what is missing or older than its notebook.
                pages.submit(_render_page, record, f"notebooks/{step}.ipynb")
                if status == "failed":
                    outcome = "failed"
                    break
                if status == "planned":
                    outcome = "planned" if outcome != "failed" else outcome
    except KeyboardInterrupt:
        _cancel(record, progress)
        raise
    record.finish(outcome)
    progress(f"run {outcome}: {record.path}")
    return record


def _render_page(record: RunRecord, relpath: str) -> None:
    from runbook import report

    try:
        report.render_notebook(record.path, relpath)
    except Exception as exc:  # finish() tries again and records a failure
        log.info("%s: page not rendered yet: %s", relpath, exc)


def _cancel(record: RunRecord, progress) -> None:
    """Ctrl-C: the step it hit is failed as interrupted, the record sealed as
    cancelled, so that `audit verify` checks it and `resume` continues it."""
    _fail_running(record, "KeyboardInterrupt", "stopped by the operator (Ctrl-C)")
    record.finish("cancelled")
    progress(f"run cancelled: {record.path} (`runbook resume` continues it)")


def _fail_running(record: RunRecord, ename: str, evalue: str) -> None:
    for step in record.run().get("steps", []):
        if step.get("status") == "running":
            record.step_finished(step["name"], "failed", error={
                "cell": None, "ename": ename, "evalue": evalue})


def rollback(run_dir: Path, *, confirm: bool, reports_dir: Path | None = None,
             progress=print) -> RunRecord:
    """Undo a run in a new run folder of its own (the undone one stays sealed).

    The undone run's record must verify: its backup and inventory are what the
    rollback recreates, and its parameters are taken from the hash chain.
    """
    source, values = _intact(run_dir)
    values.update(confirm=confirm, run_dir="",
                  sandbox_state=source.run().get("sandbox_state") or "")
    p = params_mod.validate(**values)
    reports = Path(reports_dir or source.path.parent.parent).resolve()
    with acquire_tenant_lock(reports, p.tenant) as lock, \
            _environment(REPORTS_ENV, str(reports)):
        record = RunRecord.create(reports, p.tenant, parameters=p.as_dict(),
                                  operator=p.operator or None, backend=p.backend,
                                  sandbox_state=p.sandbox_state or None)
        lock.attach(record.path)
        record.update_run(rollback_of=str(source.path))
        try:
            status = _run_step(record, p, ROLLBACK, progress,
                               extra={"source_run": str(source.path)})
        except KeyboardInterrupt:
            _cancel(record, progress)
            raise
        outcome = status if status == "failed" or confirm else "planned"
        record.finish(outcome)
    progress(f"rollback {outcome}: {record.path}")
    return record


def _intact(run_dir: Path) -> tuple[RunRecord, dict]:
    """A finished or stopped run's record and its parameters, as the hash chain
    holds them (run.json's copy is not chained); refused unless it verifies."""
    record = RunRecord.open(Path(run_dir).resolve())
    if not isinstance(record.run().get("parameters"), dict):
        raise NotARunFolder(record.path, "its run.json holds no parameters")
    check = audit.verify(record.path)
    if not check.ok:  # what run.json says is only as good as the record around it
        raise audit.RecordNotIntact(record.path, check.problems)
    return record, record.chained_parameters()


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
        with _environment(KERNEL_LOG_ENV, str(target.with_suffix(".kernel.log"))):
            papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                       cwd=str(source.parent), **PAPERMILL_OPTIONS)
    except PapermillExecutionError as exc:
        error = {"cell": exc.cell_index, "ename": exc.ename, "evalue": exc.evalue}
    except Exception as exc:  # kernel died, notebook unreadable: still a failed step
        error = {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
    if target.exists():
        os.chmod(target, 0o600)
    kernel_log = target.with_suffix(".kernel.log")
    if kernel_log.exists() and not kernel_log.stat().st_size:
        kernel_log.unlink()             # a kernel that said nothing leaves no file
    status = "failed" if error else _verdict(record, step)
    record.step_finished(step, status, error=error)
    progress(f"{step} {status} ({time.monotonic() - started:.1f} s)"
             + (f": {error['ename']}: {error['evalue']}" if error else ""))
    return status


@contextmanager
def shared_session(record: RunRecord, p: params_mod.RunParameters,
                   progress=print) -> Iterator[SessionBroker | None]:
    """One connected session for the run's steps, named to their kernels.

    Yields the broker, or None when the session could not be opened; the
    steps then connect on their own. The variable is restored and the child
    closed at the end, whatever happened in between.
    """
    with ExitStack() as stack:
        broker = _open_shared(stack, record, p, progress)
        if broker is not None:
            stack.enter_context(_environment(SOCKET_ENV, str(broker.path)))
        yield broker


def _open_shared(stack: ExitStack, record: RunRecord, p: params_mod.RunParameters,
                 progress) -> SessionBroker | None:
    def connect(session) -> None:
        notebook.connect(ExchangeOnline(session), p)

    try:
        argv = notebook.child_argv(p, record)
        broker = stack.enter_context(serve(argv, timeout=p.timeout_seconds,
                                           connect=connect))
    except (PowerShellError, OSError, ValueError) as exc:
        # INFO, not WARNING: the progress line below already tells the person.
        log.info("no shared PowerShell session for %s: %s: %s", record.path,
                 type(exc).__name__, exc)
        progress(f"no shared PowerShell session ({type(exc).__name__}: {exc}); "
                 "each step connects on its own")
        return None
    log.info("shared PowerShell session of %s on %s", record.path, broker.path)
    return broker


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` for the kernels started meanwhile; restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _verdict(record: RunRecord, step: str) -> str:
    verdicts = [e for e in record.events()
                if e["kind"] == "verdict" and e["data"].get("step") == step]
    if not verdicts:
        return "failed"
    return verdicts[-1]["data"]["status"]
