"""The chain runner: the five step notebooks, executed with papermill, one record.

Each step's executed notebook lands in the run folder, failed ones included.
The chain stops at the first step that fails; `resume()` continues a stopped
run from that step with the same parameters.

Every notebook runs in a kernel reached over Unix sockets
(`runbook.kernels`), which the chain starts itself, with the step's own
environment (`step_environment`), while the step before runs
(`StepKernels`); no kernel ever takes anything from the chain's own
`os.environ` changes, as there are none. The steps of one run share one
PowerShell session: the chain starts the child, connects once and serves the
session on a private socket (`runbook.powershell.broker`) for as long as the
steps run; each kernel finds the socket in the environment variable
`SOCKET_ENV`. Where that session cannot be opened (no pwsh, the sign-in
failed) the chain says why and goes on: each step then opens a session of
its own, and step 1 records the failure where the engineer reads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from runbook import audit, notebook
from runbook import params as params_mod
from runbook.audit import NotARunFolder, RunRecord
from runbook.batch import acquire_tenant_lock
from runbook.exchange import ExchangeOnline
from runbook.kernels import KERNEL_LOG_ENV, PAPERMILL_OPTIONS, PreparedKernel
from runbook.kernels import modules_imported_by
from runbook.notebook import default_reports_dir
from runbook.powershell import PowerShellError
from runbook.powershell.broker import SOCKET_ENV, SOCKET_NAME, SessionBroker, serve

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
    """Every step of the run succeeded already, or the run is a rollback
    (undone again by `runbook rollback` of the same run, not resumed)."""


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
    source = record.run().get("rollback_of")
    if source:
        # Resuming would run the migration's steps on the tenant being rolled
        # back; the rollback's own plan skips what is back already.
        raise NothingToResume(f"{run_dir}: this is a rollback of {source}; a rollback "
                              f"is not resumed: run `runbook rollback {source} "
                              "--confirm` again, its plan leaves out what is back "
                              "already")
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
        with StepKernels(record, steps[0]) as kernels, \
                shared_session(record, p, progress, kernels), \
                ThreadPoolExecutor(1, thread_name_prefix="runbook-pages") as pages:
            for index, step in enumerate(steps):
                kernel = kernels.take(step)
                if index + 1 < len(steps):      # started while this step runs
                    kernels.prepare(steps[index + 1])
                status = _run_step(record, p, step, progress, kernel=kernel)
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


def step_environment(record: RunRecord, step: str,
                     socket: str | None = None) -> dict[str, str]:
    """The environment of a step's kernel: this process's, plus where the
    run's reports are (`REPORTS_ENV`), where the kernel's own output goes
    (`KERNEL_LOG_ENV`) and, in a run with a shared session, its socket."""
    env = dict(os.environ)
    env[REPORTS_ENV] = str(record.path.parent.parent)
    env[KERNEL_LOG_ENV] = str(record.path / "notebooks" / f"{step}.kernel.log")
    env.pop(SOCKET_ENV, None)
    if socket:
        env[SOCKET_ENV] = socket
    return env


class StepKernels:
    """The kernels of a run's steps, each started before its step is due.

    `prepare(step)` starts the step's kernel in the background (a
    `runbook.kernels.PreparedKernel`); `take(step)` hands it over, started
    now if it was not prepared. `start_with(socket)` names the shared
    session's socket to every kernel and starts the first step's at once,
    while the session opens; when the session then does not open,
    `no_socket()` throws away what was prepared with it. Leaving the
    context shuts down every kernel nobody took.
    """

    def __init__(self, record: RunRecord, first: str):
        self.record = record
        self.first = first
        self.socket: str | None = None
        self._prepared: dict[str, PreparedKernel] = {}
        self._handed: list[tuple[str, PreparedKernel]] = []

    def start_with(self, socket: str) -> None:
        self.socket = socket
        self.prepare(self.first)

    def __enter__(self) -> "StepKernels":
        return self

    def __exit__(self, *exc_info) -> None:
        # discard() leaves alone a kernel papermill took (and shut down).
        for step, kernel in [*self._prepared.items(), *self._handed]:
            kernel.discard()
            _drop_empty_log(self.record, step)   # a kernel that never ran a step
        self._prepared.clear()
        self._handed.clear()

    def prepare(self, step: str) -> None:
        if step not in self._prepared:
            self._prepared[step] = _kernel_for(self.record, step, self.socket)

    def take(self, step: str) -> PreparedKernel:
        self.prepare(step)
        kernel = self._prepared.pop(step)
        self._handed.append((step, kernel))
        return kernel

    def no_socket(self) -> None:
        self.socket = None
        for step in list(self._prepared):
            self._prepared.pop(step).discard()


def _drop_empty_log(record: RunRecord, step: str) -> None:
    """A kernel that said nothing leaves no file."""
    log_file = record.path / "notebooks" / f"{step}.kernel.log"
    if log_file.exists() and not log_file.stat().st_size:
        log_file.unlink()


def _kernel_for(record: RunRecord, step: str, socket: str | None) -> PreparedKernel:
    source = notebooks_dir() / f"{step}.ipynb"
    # The kernel's log goes there from its first line on.
    (record.path / "notebooks").mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        modules = modules_imported_by(nbformat.read(source, as_version=4))
    except (OSError, ValueError) as exc:    # papermill reports the notebook itself
        log.debug("no imports read from %s: %s", source, exc)
        modules = []
    return PreparedKernel(step_environment(record, step, socket), str(source.parent),
                          modules)


def _render_page(record: RunRecord, relpath: str) -> None:
    from runbook import report

    try:
        report.render_notebook(record.path, relpath)
    except Exception as exc:  # finish() tries again and records a failure
        log.info("%s: page not rendered yet: %s", relpath, exc)


def _cancel(record: RunRecord, progress, then: str = "`runbook resume` continues it"
            ) -> None:
    """Ctrl-C: the step it hit is failed as interrupted, the record sealed as
    cancelled, so that `audit verify` checks it and `resume` continues it."""
    _fail_running(record, "KeyboardInterrupt", "stopped by the operator (Ctrl-C)")
    try:
        record.finish("cancelled")
    except KeyboardInterrupt:
        pass        # a second Ctrl-C: the run is being cancelled already
    progress(f"run cancelled: {record.path} ({then})")


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
    with acquire_tenant_lock(reports, p.tenant) as lock:
        record = RunRecord.create(reports, p.tenant, parameters=p.as_dict(),
                                  operator=p.operator or None, backend=p.backend,
                                  sandbox_state=p.sandbox_state or None)
        lock.attach(record.path)
        record.update_run(rollback_of=str(source.path))
        try:
            status = _run_step(record, p, ROLLBACK, progress,
                               extra={"source_run": str(source.path)})
        except KeyboardInterrupt:
            _cancel(record, progress, f"`runbook rollback {source.path} --confirm` "
                    "again finishes the undo")
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


def _run_step(record: RunRecord, p, step: str, progress, extra=None, *,
              kernel: PreparedKernel | None = None) -> str:
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
    if kernel is None:
        kernel = _kernel_for(record, step, None)
    try:
        papermill.execute_notebook(str(source), str(target), parameters=parameters,
                                   prepared=kernel, **PAPERMILL_OPTIONS)
    except PapermillExecutionError as exc:
        error = {"cell": exc.cell_index, "ename": exc.ename, "evalue": exc.evalue}
    except Exception as exc:  # kernel died, notebook unreadable: still a failed step
        error = {"cell": None, "ename": type(exc).__name__, "evalue": str(exc)}
    finally:
        # papermill may stop before it takes the kernel (a notebook it cannot
        # read); the engine shut down the one it took.
        kernel.discard()
    if target.exists():
        os.chmod(target, 0o600)
    _drop_empty_log(record, step)
    status = "failed" if error else _verdict(record, step)
    record.step_finished(step, status, error=error)
    progress(f"{step} {status} ({time.monotonic() - started:.1f} s)"
             + (f": {error['ename']}: {error['evalue']}" if error else ""))
    return status


@contextmanager
def shared_session(record: RunRecord, p: params_mod.RunParameters,
                   progress=print, kernels: StepKernels | None = None
                   ) -> Iterator[SessionBroker | None]:
    """One connected session for the run's steps, named to their kernels.

    Yields the broker, or None when the session could not be opened; the
    steps then connect on their own. The socket's path is chosen first and
    given to `kernels`, so that the first step's kernel starts while the
    session opens. The child is closed at the end, whatever happened.
    """
    folder = tempfile.mkdtemp(prefix="runbook-session-")     # mode 0700
    try:
        with ExitStack() as stack:
            if kernels is not None:
                kernels.start_with(os.path.join(folder, SOCKET_NAME))
            broker = _open_shared(stack, record, p, progress,
                                  os.path.join(folder, SOCKET_NAME))
            if broker is None and kernels is not None:
                kernels.no_socket()
            yield broker
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _open_shared(stack: ExitStack, record: RunRecord, p: params_mod.RunParameters,
                 progress, path: str) -> SessionBroker | None:
    def connect(session) -> None:
        notebook.connect(ExchangeOnline(session), p)

    try:
        argv = notebook.child_argv(p, record)
        broker = stack.enter_context(serve(argv, timeout=p.timeout_seconds,
                                           connect=connect, path=path))
    except (PowerShellError, OSError, ValueError) as exc:
        # INFO, not WARNING: the progress line below already tells the person.
        log.info("no shared PowerShell session for %s: %s: %s", record.path,
                 type(exc).__name__, exc)
        progress(f"no shared PowerShell session ({type(exc).__name__}: {exc}); "
                 "each step connects on its own")
        return None
    log.info("shared PowerShell session of %s on %s", record.path, broker.path)
    return broker


def _verdict(record: RunRecord, step: str) -> str:
    verdicts = [e for e in record.events()
                if e["kind"] == "verdict" and e["data"].get("step") == step]
    if not verdicts:
        return "failed"
    return verdicts[-1]["data"]["status"]
