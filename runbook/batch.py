"""Batch runs: many tenants from one CSV file, each in a process of its own.

    runbook batch TENANTS.csv [--workers N] [--confirm] [--executor local|dask]
                  [--scheduler ADDRESS] [--time-limit MINUTES] [--reports DIR]
                  [--steps S1,S2] [--wait-minutes M] [--poll-seconds S]

The phases: every row of the file is validated with the one parameter model
(`runbook.params`) before any tenant is touched; a bad row is reported with
its line number and reason and the others run. Each tenant then runs its
whole chain (`runbook.chain.run`) in a fresh Python process, at most
`workers` at once, under its tenant lock (`reports/<tenant>/.lock`). A
tenant that fails, overruns its time limit or crashes is recorded as such and
the others go on. The batch folder ``reports/batches/<batch-id>/`` gets
``summary.csv`` and ``summary.html`` (every tenant once: outcome, duration,
link to its run folder) and one log file per tenant.

Why a process per tenant, started with `subprocess` rather than
`multiprocessing`: the tenant process leads a session of its own, so one
signal reaches its group, and it also runs where `multiprocessing` refuses
to start children (inside a daemonic Dask worker). It is a fresh interpreter
either way, as with the "spawn" start method. Kernels and PowerShell children
start sessions of their own, so a process group does not hold them all; every
process of a tenant therefore inherits a token in its environment
(`TOKEN_ENV`), and stopping a tenant kills every process carrying that token,
found in /proc. Without /proc (not Linux) only the tenant's group is killed.

Stopping. A tenant past its time limit, or every running tenant on Ctrl-C,
is stopped that way; the runner then closes its run record (the running step
failed, the run ``failed`` or ``cancelled``) so the folder verifies
(`runbook.audit.verify`); where the record cannot be closed it stays
unfinished, which verify accepts up to its last complete event.

Kernels talk to their runner over IPC (`runbook.kernels.IpcKernelManager`,
which the chain uses for every notebook): many kernels starting at once
cannot collide on a port and nothing listens on the network. Each tenant's
chain opens one PowerShell session and shares it with its notebooks
(`runbook.powershell.broker`), so a tenant connects once, not once a step.

Errors::

    BatchError              base of what this module raises
    ├── BatchFileError      the CSV file as a whole cannot be read (header,
    │                       encoding, size, not a file); nothing ran
    ├── SchedulerUnreachable  no Dask scheduler answered at the address given
    └── TenantBusy          another run holds the tenant's lock; carries the
                            tenant, the other run's folder and the lock's data
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import html
import io
import json
import logging
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Mapping

from runbook import params as params_mod
# Kept importable from here: the batch's kernels are the chain's.
from runbook.kernels import PAPERMILL_OPTIONS, IpcKernelManager  # noqa: F401

log = logging.getLogger(__name__)

COLUMNS = ("tenant", "domains", "region", "routing", "backend", "sandbox_state",
           "module_version", "tenant_id", "app_id", "certificate_path", "operator")
REQUIRED_COLUMNS = ("tenant", "domains", "region", "routing")
PATH_COLUMNS = ("sandbox_state", "certificate_path")

# Outcomes of one tenant in a batch.
SUCCEEDED, PLANNED, FAILED = "succeeded", "planned", "failed"
TIMED_OUT, CRASHED, INTERRUPTED = "timed-out", "crashed", "interrupted"
BUSY, REJECTED, PENDING = "busy", "rejected", "pending"

TOKEN_ENV = "RUNBOOK_BATCH_TOKEN"
LOCK_NAME = ".lock"
SUMMARY_FIELDS = ("line", "tenant", "outcome", "duration_s", "run_dir", "verified",
                  "peak_memory_mb", "log", "detail")
DEFAULT_TIME_LIMIT_S = 45 * 60.0   # five steps, step 5 alone waits up to 10 min
# A row is about 100 bytes: this is some 80,000 tenants, and it keeps a device
# or a runaway export from filling the memory before a line is judged.
MAX_CSV_BYTES = 8 * 1024 * 1024
SCHEDULER_TIMEOUT_S = 30.0

_KILL_ROUNDS = 50         # sweeps until no process with the token is left
_REAP_WAIT_S = 10.0
_EXIT_AFTER_EOF_S = 30.0  # the tenant process closed its pipe; it should end now
_TICK_S = 0.2
_DASK_STOP_TICK_S = 1.0   # how often a Dask task asks the scheduler for a stop
_DASK_STOP_GRACE_S = 30.0  # after a stop, how long to wait for tasks to report
_DASK_CLOSE_S = 10.0      # closing the client and a local cluster
_DOMAIN_SPLIT = re.compile(r"[;\s]+")
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")     # as runbook.params checks it
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")



# -- errors -----------------------------------------------------------------


class BatchError(Exception):
    """Base of the errors of batch runs."""


class BatchFileError(BatchError):
    """The CSV file as a whole cannot be used; no row of it ran."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SchedulerUnreachable(BatchError):
    """No Dask scheduler answered at `address`; no tenant was submitted."""

    def __init__(self, address: str, reason: str):
        self.address = address
        self.reason = reason
        super().__init__(f"no Dask scheduler answered at {address} ({reason}); start "
                         "one there, or leave out --scheduler for a local cluster")


class TenantBusy(BatchError):
    """Another run of the same tenant holds its lock; this one did not start."""

    def __init__(self, tenant: str, run_dir: str | None, holder: Mapping):
        self.tenant = tenant
        self.run_dir = run_dir
        self.holder = dict(holder)
        who = (f"pid {holder.get('pid')} on {holder.get('host')} since "
               f"{holder.get('since')}")
        where = run_dir or "its run folder is not created yet"
        super().__init__(f"tenant {tenant} is busy: another run ({who}) is at work "
                         f"on it: {where}")


# -- the rows -----------------------------------------------------------------


@dataclass(frozen=True)
class BatchRow:
    """One valid row: its line in the file and the tenant's parameters."""

    line: int
    params: params_mod.RunParameters

    @property
    def tenant(self) -> str:
        return self.params.tenant


@dataclass(frozen=True)
class Rejected:
    """A row that will not run: its line, the tenant cell as given, and why."""

    line: int
    reason: str
    tenant: str = ""


def read_rows(csv_path: str | os.PathLike, *, common: Mapping | None = None
              ) -> tuple[list[BatchRow], list[Rejected]]:
    """Read and validate every row of a tenants file; nothing runs here.

    Columns are `COLUMNS` (any order, names case-insensitive); the first four
    are required, the others may be left out or empty. `domains` holds one or
    more domains separated by ";" or white space. The file may be separated
    by "," or, as spreadsheets in Swiss and German locales save it, by ";"
    (then domains are separated by spaces). Cells are read as text, never
    converted: a tenant ID or a ticket number stays what was written.
    Relative paths are taken from the file's folder. `common` values (e.g.
    wait_minutes) apply to every row.

    Raises BatchFileError when the file cannot be read or its header names
    an unknown column or lacks a required one.
    """
    path = Path(csv_path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(text))
    header = _header(path, next(reader, None))
    rows: list[BatchRow] = []
    rejected: list[Rejected] = []
    seen: dict[tuple[str, str], int] = {}
    for cells in reader:
        line = reader.line_num - sum(cell.count("\n") for cell in cells)
        if not any(cell.strip() for cell in cells):
            continue
        try:
            row = _row(path, header, cells, line, dict(common or {}))
            _check_unique(row, seen)
        except (params_mod.ParameterError, _RowProblem) as exc:
            tenant = cells[header.index("tenant")].strip() if len(cells) > header.index(
                "tenant") else ""
            rejected.append(Rejected(line, str(exc), tenant))
            continue
        rows.append(row)
    return rows, rejected


class _RowProblem(ValueError):
    """A row that is malformed before its values can be judged."""


def _read_text(path: Path) -> str:
    try:
        data = _read_limited(path)
        # utf-8-sig: spreadsheet programs start the file with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchFileError(path, f"not UTF-8 text (byte {exc.start}); save it as "
                             "CSV UTF-8") from exc
    except OSError as exc:
        raise BatchFileError(path, exc.strerror or str(exc)) from exc


def _read_limited(path: Path) -> bytes:
    # O_NONBLOCK: opening a named pipe must not wait for a writer; a regular
    # file reads as usual.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BatchFileError(path, "not a regular file; give the CSV file itself")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise BatchFileError(path, f"larger than {MAX_CSV_BYTES // 1024 ** 2} MiB; "
                             "split it into several files")
    return data


def _dialect(text: str) -> type[csv.Dialect]:
    first = text.split("\n", 1)[0]
    if ";" in first and "," not in first:
        class Semicolon(csv.excel):
            delimiter = ";"
        return Semicolon
    return csv.excel


def _header(path: Path, cells: list[str] | None) -> list[str]:
    if not cells:
        raise BatchFileError(path, "empty file; the first line names the columns: "
                             + ", ".join(COLUMNS))
    header = [cell.strip().lower() for cell in cells]
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise BatchFileError(path, f"unknown column {unknown[0]!r} in line 1; the "
                             f"columns are {', '.join(COLUMNS)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BatchFileError(path, f"column {repeated[0]!r} appears twice in line 1")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise BatchFileError(path, f"line 1 lacks the required column {missing[0]!r}")
    return header


def _row(path: Path, header: list[str], cells: list[str], line: int,
         common: dict) -> BatchRow:
    if len(cells) != len(header):
        raise _RowProblem(f"{len(cells)} cells where the header has {len(header)}")
    values: dict = dict(common)
    for name, cell in zip(header, cells):
        cell = cell.strip()
        if not cell:
            continue
        if name == "domains":
            values[name] = [d for d in _DOMAIN_SPLIT.split(cell) if d]
        elif name in PATH_COLUMNS:
            values[name] = str((path.parent / Path(cell).expanduser()).resolve())
        else:
            values[name] = cell
    for name in REQUIRED_COLUMNS:
        if name not in values:
            raise params_mod.ParameterError(name, "", "this column needs a value")
    values.setdefault("confirm", False)
    p = params_mod.validate(**values)
    _check_unattended(p)
    return BatchRow(line, p)


def _check_unattended(p: params_mod.RunParameters) -> None:
    """What a run needs when nobody is there to answer."""
    params_mod.check_files(p)
    if p.backend == "sandbox":
        return
    # design.md, pwsh side: batch runs log in app-only with a certificate;
    # device login would wait for a person who is not there.
    if not p.app_id or not p.certificate_path:
        raise params_mod.ParameterError(
            "app_id" if not p.app_id else "certificate_path", "",
            "app_id and certificate_path for an unattended (app-only) login")


def _check_unique(row: BatchRow, seen: dict[tuple[str, str], int]) -> None:
    """One row per tenant, one tenant per sandbox state file."""
    keys = [("tenant", row.tenant)]
    if row.params.sandbox_state:
        keys.append(("sandbox_state", row.params.sandbox_state))
    for key in keys:
        if key in seen:
            raise _RowProblem(f"{key[0]} {key[1]} is already on line {seen[key]}; "
                              "two runs at once would work on one tenant")
    for key in keys:
        seen[key] = row.line


# -- the tenant lock -----------------------------------------------------------


_held: dict[Path, list] = {}          # lock path -> [TenantLock, depth]
_held_guard = threading.Lock()


@dataclass
class TenantLock:
    """The lock of one tenant's runs, held by this process."""

    path: Path
    tenant: str
    token: str
    owner_thread: int
    run_dir: str | None = None

    def attach(self, run_dir: str | os.PathLike) -> None:
        """Name the run folder in the lock, so a refused second run can show it."""
        self.run_dir = str(Path(run_dir).resolve())
        with _directory_lock(self.path.parent):
            current = _read_lock(self.path)
            if current.get("token") == self.token:
                _write_lock_file(self.path, dict(current, run_dir=self.run_dir),
                                 replace=True)


@contextmanager
def acquire_tenant_lock(reports_dir: str | os.PathLike, tenant: str
                        ) -> Iterator[TenantLock]:
    """Hold ``reports/<tenant>/.lock`` for the time of one run.

    The lock file is created with O_EXCL and holds the pid, its start time,
    the host and (once `attach`ed) the run folder. A lock whose process is
    gone is stale and taken over; a lock of another host is never judged
    stale. The thread that holds a lock may take it again (the batch worker
    and `chain.run` both do). Raises TenantBusy naming the other run.
    """
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise ValueError(f"tenant {tenant!r} is not one safe folder name")
    path = Path(reports_dir) / tenant / LOCK_NAME
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = _enter(path, tenant)
    try:
        yield lock
    finally:
        _leave(lock)


def _enter(path: Path, tenant: str) -> TenantLock:
    key = path.resolve()
    with _held_guard:
        held = _held.get(key)
        if held and held[0].owner_thread == threading.get_ident():
            held[1] += 1
            return held[0]
        if held:
            raise TenantBusy(tenant, held[0].run_dir, _read_lock(path))
        lock = TenantLock(path, tenant, secrets.token_hex(8), threading.get_ident())
        _take(path, lock)
        _held[key] = [lock, 1]
        return lock


def _leave(lock: TenantLock) -> None:
    key = lock.path.resolve()
    with _held_guard:
        held = _held[key]
        held[1] -= 1
        if held[1]:
            return
        del _held[key]
        with _directory_lock(lock.path.parent):
            if _read_lock(lock.path).get("token") == lock.token:
                lock.path.unlink(missing_ok=True)


def _take(path: Path, lock: TenantLock) -> None:
    """Create the lock file, first removing a stale one; all under the folder lock."""
    info = {"pid": os.getpid(), "pid_started": _process_start(os.getpid()),
            "host": socket.gethostname(), "since": _utc_stamp(), "token": lock.token,
            "run_dir": None}
    with _directory_lock(path.parent):
        current = _read_lock(path) if path.exists() else None
        if current is not None and _holder_alive(current):
            raise TenantBusy(lock.tenant, current.get("run_dir")
                             or _running_run(path.parent), current)
        if current is not None:
            log.warning("tenant %s: taking over the stale lock of pid %s (%s)",
                        lock.tenant, current.get("pid"), path)
            path.unlink()
        _write_lock_file(path, info, replace=False)


def _drop_lock_of(reports_dir: Path, tenant: str, pid: int) -> None:
    """Remove the lock a stopped or crashed tenant process left behind."""
    path = reports_dir / tenant / LOCK_NAME
    if not path.exists():
        return
    with _directory_lock(path.parent):
        info = _read_lock(path)
        if info.get("pid") == pid and not _holder_alive(info):
            path.unlink(missing_ok=True)


@contextmanager
def _directory_lock(folder: Path) -> Iterator[None]:
    """An flock on the tenant folder itself: check-and-take is one step."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)     # closing drops the flock


def _write_lock_file(path: Path, info: dict, *, replace: bool) -> None:
    data = json.dumps(info, indent=1).encode("utf-8") + b"\n"
    if replace:
        temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temp.write_bytes(data)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _read_lock(path: Path) -> dict:
    """The lock's data; {} for a missing file or one its writer left unfinished."""
    try:
        info = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _holder_alive(info: dict) -> bool:
    if not info:
        return False      # written under the folder lock: empty means its writer died
    if info.get("host") != socket.gethostname():
        return True       # a process on another machine cannot be looked at
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _process_start(pid)
    if started is None:
        return True
    # The same pid with another start time is a new process that reused it;
    # a zombie is a holder that is dead but not yet reaped.
    return started == info.get("pid_started") and _process_state(pid) != "Z"


def _process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), else None."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _process_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ")": split after the last ")".
    return text.rsplit(")", 1)[1].split()


def _running_run(tenant_dir: Path) -> str | None:
    """The newest run folder of the tenant that is still running, if any."""
    for folder in sorted(tenant_dir.iterdir(), reverse=True):
        run_file = folder / "run.json"
        try:
            if json.loads(run_file.read_text("utf-8")).get("status") == "running":
                return str(folder)
        except (OSError, ValueError):
            continue
    return None


# -- one tenant ----------------------------------------------------------------


@dataclass
class TenantOutcome:
    """What became of one tenant of a batch."""

    line: int
    tenant: str
    outcome: str = PENDING
    duration_s: float | None = None
    run_dir: str | None = None
    verified: bool | None = None
    peak_memory_mb: float | None = None
    detail: str = ""
    log: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Job:
    """Everything a tenant's supervisor needs; plain data, so Dask can ship it."""

    line: int
    parameters: dict
    reports_dir: str
    log_path: str
    token: str
    time_limit_s: float
    steps: tuple[str, ...] | None = None

    @property
    def tenant(self) -> str:
        return self.parameters["tenant"]


def _supervise(job: _Job, should_stop: Callable[[], bool],
               progress: Callable[[str], None]) -> TenantOutcome:
    """Run one tenant's process to its end, its time limit, or a stop."""
    outcome = TenantOutcome(job.line, job.tenant, log=job.log_path)
    if should_stop():
        outcome.outcome, outcome.detail = INTERRUPTED, "the batch stopped before it"
        return outcome
    tenant_dir = Path(job.reports_dir) / job.tenant
    before = _run_folders(tenant_dir)
    started = time.monotonic()
    # The tenant's own temp folder: the kernels' and the session's sockets of a
    # tenant that had to be killed go with it.
    scratch = tempfile.mkdtemp(prefix="runbook-tenant-")
    try:
        process, messages = _start_tenant(job, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    result: dict = {}
    try:
        ended_by = _follow(messages, job, started, should_stop, progress, result)
        if ended_by == "ended":
            _wait_for_exit(process)
    finally:
        os.close(messages)
        stop_processes(process, job.token)
        _drop_lock_of(Path(job.reports_dir), job.tenant, process.pid)
        shutil.rmtree(scratch, ignore_errors=True)
    outcome.duration_s = round(time.monotonic() - started, 2)
    _settle(outcome, ended_by, result.get("result"), process, job, tenant_dir, before)
    progress(f"{job.tenant}: {outcome.outcome} ({outcome.duration_s:.1f} s)")
    return outcome


def _start_tenant(job: _Job, scratch: str) -> tuple[subprocess.Popen, int]:
    read_end, write_end = os.pipe()
    env = dict(os.environ, **{TOKEN_ENV: job.token, "TMPDIR": scratch})
    with open(job.log_path, "ab") as log_file:
        os.chmod(job.log_path, 0o600)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "runbook.batch", "--tenant-process",
                 str(write_end)],
                stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, pass_fds=(write_end,), start_new_session=True)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
    payload = {"parameters": job.parameters, "reports_dir": job.reports_dir,
               "steps": job.steps}
    try:
        process.stdin.write(json.dumps(payload).encode("utf-8"))
        process.stdin.close()
    except OSError:
        pass      # it died at once; _follow sees the end and calls it a crash
    return process, read_end


def _follow(messages: int, job: _Job, started: float, should_stop, progress,
            result: dict) -> str:
    """Read the tenant's messages until it ends ("ended"), or say why to stop it."""
    selector = selectors.DefaultSelector()
    selector.register(messages, selectors.EVENT_READ)
    pending = b""
    try:
        while True:
            if time.monotonic() - started > job.time_limit_s:
                return "time-limit"
            if should_stop():
                return "stop"
            if not selector.select(timeout=_TICK_S):
                continue
            chunk = os.read(messages, 65536)
            if not chunk:
                return "ended"
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _take_message(line, job, progress, result)
    finally:
        selector.close()


def _take_message(line: bytes, job: _Job, progress, result: dict) -> None:
    try:
        message = json.loads(line)
    except ValueError:
        return
    if "progress" in message:
        progress(f"{job.tenant}: {message['progress']}")
    if isinstance(message.get("result"), dict):
        result["result"] = message["result"]


def _wait_for_exit(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=_EXIT_AFTER_EOF_S)
    except subprocess.TimeoutExpired:
        log.warning("tenant process %d still there %.0f s after its last word",
                    process.pid, _EXIT_AFTER_EOF_S)


def _settle(outcome: TenantOutcome, ended_by: str, result: dict | None,
            process: subprocess.Popen, job: _Job, tenant_dir: Path,
            before: set[str]) -> None:
    """Turn how the tenant ended into its outcome, and close its record."""
    outcome.run_dir = (result or {}).get("run_dir") or _newest_run(tenant_dir, before)
    if result is not None:
        outcome.outcome = result["outcome"]
        outcome.detail = result.get("detail", "")
        outcome.peak_memory_mb = result.get("peak_memory_mb")
    elif ended_by == "time-limit":
        outcome.outcome = TIMED_OUT
        outcome.detail = f"stopped after its time limit of {job.time_limit_s:g} s"
    elif ended_by == "stop":
        outcome.outcome, outcome.detail = INTERRUPTED, "stopped: the batch was stopped"
    else:
        outcome.outcome = CRASHED
        outcome.detail = f"the tenant process ended without a result ({_exit(process)})"
    _check_record(outcome, close=result is None)


def _newest_run(tenant_dir: Path, before: set[str]) -> str | None:
    """The run folder the tenant made since `before` was listed, if any."""
    new = sorted(_run_folders(tenant_dir) - before)
    return str(tenant_dir / new[-1]) if new else None


def _check_record(outcome: TenantOutcome, *, close: bool) -> None:
    """Close the outcome's record where the tenant could not (`close`), then
    verify it; a problem is added to the detail."""
    if not outcome.run_dir:
        return
    if close:
        _close_abandoned(Path(outcome.run_dir), outcome)
    outcome.verified, problem = _verify(Path(outcome.run_dir))
    if problem:
        outcome.detail = f"{outcome.detail}; record: {problem}".lstrip("; ")


def _exit(process: subprocess.Popen) -> str:
    code = process.returncode
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _close_abandoned(run_dir: Path, outcome: TenantOutcome) -> None:
    """Finish the record of a tenant that was stopped or died in the middle."""
    from runbook.audit import RunRecord

    status = "cancelled" if outcome.outcome == INTERRUPTED else "failed"
    try:
        record = RunRecord.open(run_dir)
        run = record.run()
        if run.get("status") != "running":
            events = record.events()
            sealed = bool(events) and events[-1]["kind"] == "run-finished"
            if run.get("status") and not sealed:
                # Killed while sealing: run.json has its outcome, the seal is
                # missing; seal what it says, so that verify can check it.
                record.finish(run["status"])
            return
        record.event("run-abandoned", outcome=outcome.outcome, reason=outcome.detail)
        for step in run.get("steps", []):
            if step.get("status") == "running":
                record.step_finished(step["name"], "failed", error={
                    "cell": None, "ename": outcome.outcome, "evalue": outcome.detail})
        record.finish(status)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the row stays
        # Left unfinished (or sealed without its page): verify still checks it
        # up to its last complete event.
        log.warning("%s: record not closed: %s: %s", run_dir, type(exc).__name__, exc)


def _verify(run_dir: Path) -> tuple[bool, str]:
    from runbook import audit

    try:
        result = audit.verify(run_dir)
    except Exception as exc:  # a damaged folder is a finding, not a crash
        return False, f"verify failed: {type(exc).__name__}: {exc}"
    return result.ok, "" if result.ok else result.problems[0]


def _run_folders(tenant_dir: Path) -> set[str]:
    try:
        return {p.name for p in tenant_dir.iterdir()
                if p.is_dir() and (p / "run.json").exists()}
    except FileNotFoundError:
        return set()


# -- stopping a tenant's processes ---------------------------------------------


def stop_processes(process: subprocess.Popen | None, token: str) -> int:
    """Kill a tenant process, its group and every process with its token.

    Returns how many processes were found by their token. Safe to call on a
    process that has ended already.
    """
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    found = 0
    for _ in range(_KILL_ROUNDS):
        pids = processes_with_token(token)
        if not pids:
            break
        found += len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    if process is not None:
        try:
            process.wait(timeout=_REAP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("tenant process %d survived SIGKILL", process.pid)
    return found


def processes_with_token(token: str) -> list[int]:
    """Live processes (not this one) whose environment carries `token`."""
    wanted = f"{TOKEN_ENV}={token}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


# -- the tenant process --------------------------------------------------------


def _tenant_process(fd: int) -> int:
    """Entry of the tenant process: read the job, run the chain, report."""
    # Kernels and PowerShell children must not hold the pipe open: its end
    # is how the supervisor learns that this process is gone.
    os.set_inheritable(fd, False)
    out = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def send(**message) -> None:
        out.write(json.dumps(message, default=str) + "\n")

    job = json.loads(sys.stdin.read())
    result = _run_tenant(job, lambda text: send(progress=text))
    send(result=result)
    out.close()
    return 0


def _run_tenant(job: dict, progress: Callable[[str], None]) -> dict:
    from runbook import chain

    reports = Path(job["reports_dir"])
    result: dict = {"run_dir": None, "detail": ""}
    try:
        p = params_mod.validate(**job["parameters"])
        steps = tuple(job.get("steps") or chain.STEPS)
        with acquire_tenant_lock(reports, p.tenant):
            record = chain.run(p, reports_dir=reports, steps=steps, progress=progress)
        outcome = _outcome_of(record.run()["status"])
        result.update(run_dir=str(record.path), outcome=outcome,
                      detail=_step_detail(record, "failed" if outcome == FAILED else (
                          "planned" if p.confirm and outcome == PLANNED else "")))
    except TenantBusy as exc:
        result.update(outcome=BUSY, detail=str(exc), run_dir=None)
    except Exception as exc:
        log.exception("tenant run failed")
        result.update(outcome=FAILED, detail=f"{type(exc).__name__}: {exc}")
    result["peak_memory_mb"] = _peak_memory_mb()
    return result


def _outcome_of(status: str) -> str:
    """A run's status as a batch outcome. A confirmed run that only planned
    stays "planned", which a confirmed batch does not count as success."""
    return {"succeeded": SUCCEEDED, "planned": PLANNED,
            "cancelled": INTERRUPTED}.get(status, FAILED)


def _step_detail(record, status: str) -> str:
    """The first step of `status` and why: its error, else its verdict."""
    if not status:
        return ""
    for step in record.run().get("steps", []):
        if step.get("status") != status:
            continue
        error = step.get("error") or {}
        if error:
            why = f"{error.get('ename')}: {error.get('evalue')}"
            return f"{step['name']} {status}: {why}"
        verdicts = [e["data"].get("message", "") for e in record.events()
                    if e["kind"] == "verdict" and e["data"].get("step") == step["name"]]
        return f"{step['name']} {status}: {verdicts[-1] if verdicts else 'no verdict'}"
    return ""


def _peak_memory_mb() -> float:
    """Peak resident memory of this process plus its largest child (kernel or
    PowerShell), in MB; Linux reports ru_maxrss in kilobytes."""
    import resource

    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    kilobytes = peak / 1024 if sys.platform == "darwin" else peak  # macOS: bytes
    return round(kilobytes / 1024, 1)


# -- the batch -----------------------------------------------------------------


@dataclass
class BatchResult:
    """The batch folder and every tenant's outcome, in file order."""

    batch_id: str
    path: Path
    outcomes: list[TenantOutcome]
    interrupted: bool = False
    successes: tuple[str, ...] = (SUCCEEDED,)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and not self.interrupted and all(
            o.outcome in self.successes for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for item in self.outcomes:
            found[item.outcome] = found.get(item.outcome, 0) + 1
        return found


def run_batch(rows: list[BatchRow], *, workers: int = 1, confirm: bool = False,
              executor: str = "local", scheduler: str | None = None,
              reports_dir: str | os.PathLike,
              time_limit_s: float = DEFAULT_TIME_LIMIT_S,
              rejected: list[Rejected] = (), steps: tuple[str, ...] | None = None,
              progress: Callable[[str], None] = print) -> BatchResult:
    """Run every row's chain, at most `workers` at once; write the summary.

    `executor` "local" runs the tenants as processes of this machine; "dask"
    submits each tenant as one task to the `dask.distributed` scheduler at
    `scheduler` (or to a LocalCluster of `workers` processes on 127.0.0.1
    when none is given). Rejected rows are listed in the summary as such.
    `steps` runs only those steps of the chain (e.g. the prerequisites of
    every tenant before the day of the migration). Ctrl-C stops every
    running tenant and returns with `interrupted` set.
    """
    if executor not in ("local", "dask"):
        raise ValueError(f"executor {executor!r} is not one of local, dask")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    steps = _chain_steps(steps)
    reports = Path(reports_dir).resolve()
    # Before the batch folder: a scheduler nobody answers at leaves nothing behind.
    dask = _dask_connection(workers, scheduler) if executor == "dask" else None
    try:
        return _run_batch(rows, confirm=confirm, workers=workers, executor=executor,
                          dask=dask, reports=reports, time_limit_s=time_limit_s,
                          rejected=rejected, steps=steps, progress=progress)
    finally:
        if dask is not None:
            dask.close()


def _run_batch(rows, *, confirm, workers, executor, dask, reports, time_limit_s,
               rejected, steps, progress) -> BatchResult:
    batch_id, folder = _new_batch_folder(reports)
    outcomes = _initial_outcomes(rows, rejected)
    jobs = [_job(row, confirm, reports, folder, batch_id, time_limit_s, steps)
            for row in rows]
    result = BatchResult(batch_id, folder, outcomes,
                         successes=(SUCCEEDED,) if confirm else (SUCCEEDED, PLANNED))
    write_summary(result)
    progress(f"batch {batch_id}: {len(jobs)} tenants, {len(rejected)} rejected rows, "
             f"{workers} at once ({executor})")

    record = _recorder(result, folder)
    if executor == "local":
        result.interrupted = _run_local(jobs, workers, record, _locked(progress))
    else:
        result.interrupted = _run_dask(jobs, workers, dask.client, record,
                                       _locked(progress))

    for item in outcomes:
        if item.outcome == PENDING:
            item.outcome, item.detail = INTERRUPTED, "the batch stopped before it"
    write_summary(result)
    progress(f"batch {batch_id}: " + ", ".join(
        f"{n} {k}" for k, n in sorted(result.counts().items())) + f"; {folder}")
    return result


def _new_batch_folder(reports: Path) -> tuple[str, Path]:
    batches = reports / "batches"
    batches.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for _ in range(8):
        batch_id = f"{stamp}-{secrets.token_hex(2)}"
        try:
            (batches / batch_id).mkdir(mode=0o700)
        except FileExistsError:
            continue
        (batches / batch_id / "logs").mkdir(mode=0o700)
        return batch_id, batches / batch_id
    raise FileExistsError(f"no free batch id under {batches} for {stamp}")


def _initial_outcomes(rows: list[BatchRow], rejected: list[Rejected]
                      ) -> list[TenantOutcome]:
    outcomes = [TenantOutcome(row.line, row.tenant) for row in rows]
    outcomes += [TenantOutcome(r.line, r.tenant, REJECTED, detail=r.reason)
                 for r in rejected]
    return sorted(outcomes, key=lambda o: o.line)


def _chain_steps(steps) -> tuple[str, ...] | None:
    """The chosen steps in chain order; None for all of them."""
    if not steps:
        return None
    from runbook import chain

    unknown = [s for s in steps if s not in chain.STEPS]
    if unknown:
        raise ValueError(f"step {unknown[0]!r} is not one of {', '.join(chain.STEPS)}")
    return tuple(s for s in chain.STEPS if s in steps)


def _job(row: BatchRow, confirm: bool, reports: Path, folder: Path, batch_id: str,
         time_limit_s: float, steps: tuple[str, ...] | None) -> _Job:
    p = dataclasses.replace(row.params, confirm=bool(confirm))
    return _Job(line=row.line, parameters=p.as_dict(), reports_dir=str(reports),
                log_path=str(folder / "logs" / f"{row.tenant}.log"),
                token=f"{batch_id}/{row.tenant}/{secrets.token_hex(4)}",
                time_limit_s=float(time_limit_s), steps=steps)


def _recorder(result: BatchResult, folder: Path) -> Callable[[TenantOutcome], None]:
    """Put a finished tenant into the result and rewrite the summary at once."""
    guard = threading.Lock()
    by_line = {o.line: o for o in result.outcomes}

    def record(done: TenantOutcome) -> None:
        with guard:
            by_line[done.line].__dict__.update(done.as_dict())
            if done.log:
                by_line[done.line].log = os.path.relpath(done.log, folder)
            write_summary(result)

    return record


def _locked(progress: Callable[[str], None]) -> Callable[[str], None]:
    guard = threading.Lock()

    def say(text: str) -> None:
        with guard:
            progress(text)

    return say


def _run_local(jobs: list[_Job], workers: int, record, progress) -> bool:
    """Supervise the tenants from threads of this process; True when interrupted."""
    stop = threading.Event()
    pool = futures.ThreadPoolExecutor(max_workers=workers,
                                      thread_name_prefix="runbook-tenant")
    running = {pool.submit(_supervise, job, stop.is_set, progress): job for job in jobs}
    interrupted = False
    try:
        while running:
            try:
                done, _ = futures.wait(running, timeout=_TICK_S,
                                       return_when=futures.FIRST_COMPLETED)
                for future in done:
                    # Recorded before it leaves `running`: a Ctrl-C in between
                    # records it again on the next round, never loses it.
                    record(_result_of(future, running[future]))
                    del running[future]
            except KeyboardInterrupt:
                if not interrupted:
                    progress("interrupted: stopping every running tenant ...")
                interrupted = True
                stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=True)
    return interrupted


def _result_of(future, job: _Job) -> TenantOutcome:
    try:
        outcome = future.result()
    except Exception as exc:  # the supervisor itself failed: still one row
        log.exception("supervising %s failed", job.tenant)
        return TenantOutcome(job.line, job.tenant, CRASHED, log=job.log_path,
                             detail=f"the runner failed: {type(exc).__name__}: {exc}")
    if isinstance(outcome, dict):
        outcome = TenantOutcome(**outcome)
    return outcome


@dataclass
class _DaskConnection:
    client: object
    cluster: object | None

    def close(self) -> None:
        # Bounded: workers killed by a Ctrl-C must not hold the batch open.
        self.client.close(timeout=_DASK_CLOSE_S)
        if self.cluster is not None:
            self.cluster.close(timeout=_DASK_CLOSE_S)


def _dask_connection(workers: int, scheduler: str | None) -> _DaskConnection:
    """A client of the scheduler at `scheduler`, or of a LocalCluster of
    `workers` processes on 127.0.0.1; SchedulerUnreachable when none answers."""
    from dask.distributed import Client, LocalCluster

    # The cluster's own start and stop chatter is no news to the engineer.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = None
    if scheduler is None:
        with _workers_ignore_ctrl_c():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                   processes=True, host="127.0.0.1",
                                   dashboard_address=None)
    try:
        client = Client(cluster if cluster is not None else scheduler,
                        timeout=SCHEDULER_TIMEOUT_S)
    except OSError as exc:     # refused or timed out: distributed's own errors
        if cluster is not None:
            cluster.close()
        raise SchedulerUnreachable(scheduler or "the local cluster", str(exc)) from exc
    return _DaskConnection(client, cluster)


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while the local cluster's processes start, so they keep
    ignoring it: a terminal's Ctrl-C reaches the whole process group, and the
    workers must live to stop their tenants and close their records, as the
    batch tells them to (its stop event), not die with a traceback each."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_dask(jobs: list[_Job], workers: int, client, record, progress) -> bool:
    """Each tenant one Dask task, at most `workers` in flight; True when interrupted."""
    from dask.distributed import Event, wait

    stop_name = f"runbook-stop-{secrets.token_hex(6)}"
    stop = Event(stop_name, client=client)
    queue = list(jobs)
    flying: dict = {}
    before: dict[int, set[str]] = {}       # run folders of each tenant at submit
    abandoned: list[_Job] = []
    interrupted = False
    given_up_at = None
    try:
        while queue or flying:
            while queue and len(flying) < workers and not interrupted:
                job = queue.pop(0)
                before[job.line] = _run_folders(Path(job.reports_dir) / job.tenant)
                future = client.submit(_dask_tenant, job, stop_name, pure=False,
                                       key=f"runbook-{job.token.replace('/', '-')}")
                flying[future] = job
            try:
                done = _finished(wait, flying)
                for future in done:
                    outcome = _result_of(future, flying[future])
                    progress(f"{outcome.tenant}: {outcome.outcome}")
                    record(outcome)
                    del flying[future]
            except KeyboardInterrupt:
                interrupted = _interrupt(progress, stop, interrupted)
                queue.clear()
                given_up_at = given_up_at or time.monotonic() + _DASK_STOP_GRACE_S
            if given_up_at is not None and flying and (
                    time.monotonic() > given_up_at or not _workers_left(client)):
                # A terminal's Ctrl-C reaches a local cluster's workers too: their
                # tasks never report. What they ran is stopped by _sweep below.
                abandoned.extend(flying.values())
                client.cancel(list(flying))
                flying.clear()
    finally:
        stop.set()
        _sweep(jobs)
    for job in abandoned:     # their processes are gone now: close their records
        outcome = _abandoned(job, before.get(job.line, set()))
        progress(f"{outcome.tenant}: {outcome.outcome}")
        record(outcome)
    return interrupted


def _workers_left(client) -> bool:
    try:
        return bool(client.nthreads())
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer has none
        return False


def _abandoned(job: _Job, before: set[str]) -> TenantOutcome:
    """The outcome of a tenant whose Dask task never reported, its record closed
    as the supervisor would have closed it."""
    outcome = TenantOutcome(job.line, job.tenant, INTERRUPTED, log=job.log_path,
                            detail="stopped; its Dask worker was gone or did not "
                                   "report back")
    outcome.run_dir = _newest_run(Path(job.reports_dir) / job.tenant, before)
    _check_record(outcome, close=True)
    return outcome


def _finished(wait, flying: dict) -> set:
    try:
        return wait(list(flying), timeout=_TICK_S * 5,
                    return_when="FIRST_COMPLETED").done
    except TimeoutError:   # nothing finished within the tick
        return set()


def _interrupt(progress, stop, already: bool) -> bool:
    if not already:
        progress("interrupted: stopping every running tenant ...")
    stop.set()
    return True


def _sweep(jobs: list[_Job]) -> None:
    """Kill what tasks of this machine left behind (a cluster closed under them)."""
    for job in jobs:
        stop_processes(None, job.token)


def _dask_tenant(job: _Job, stop_name: str) -> dict:
    """One tenant as a Dask task: the same supervisor, the stop from the scheduler."""
    from dask.distributed import Event, get_client

    stop = Event(stop_name, client=get_client())
    last = {"at": 0.0, "set": False}

    def should_stop() -> bool:
        if not last["set"] and time.monotonic() - last["at"] >= _DASK_STOP_TICK_S:
            last["at"] = time.monotonic()
            last["set"] = stop.is_set()
        return last["set"]

    return _supervise(job, should_stop, lambda text: log.info("%s", text)).as_dict()


# -- the summary ---------------------------------------------------------------


def write_summary(result: BatchResult) -> None:
    """Write summary.csv and summary.html into the batch folder (atomically)."""
    rows = [_summary_row(o, result.path) for o in result.outcomes]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _spreadsheet_safe(v) for k, v in row.items()})
    _write_atomic(result.path / "summary.csv", buffer.getvalue())
    _write_atomic(result.path / "summary.html", _summary_page(result, rows))


def _summary_row(o: TenantOutcome, folder: Path) -> dict:
    run_dir = os.path.relpath(o.run_dir, folder) if o.run_dir else ""
    return {"line": o.line, "tenant": o.tenant, "outcome": o.outcome,
            "duration_s": "" if o.duration_s is None else f"{o.duration_s:.1f}",
            "run_dir": run_dir,
            "verified": "" if o.verified is None else ("yes" if o.verified else "no"),
            "peak_memory_mb": "" if o.peak_memory_mb is None else f"{o.peak_memory_mb}",
            "log": o.log or "", "detail": o.detail}


def _spreadsheet_safe(value) -> str:
    """A cell a spreadsheet shows as text: error messages can start with "=" or "-"."""
    text = str(value)
    return "'" + text if text.startswith(_SPREADSHEET_FORMULA) else text


def _summary_page(result: BatchResult, rows: list[dict]) -> str:
    e = html.escape
    counts = ", ".join(f"{n} {e(k)}" for k, n in sorted(result.counts().items()))
    body = []
    for row in rows:
        link = _link(row["run_dir"] + "/report.html", row["run_dir"]) if (
            row["run_dir"]) else ""
        body.append(
            f'<tr class="{e(row["outcome"])}"><td>{row["line"]}</td>'
            f'<td>{e(row["tenant"])}</td><td>{e(row["outcome"])}</td>'
            f'<td>{e(row["duration_s"])}</td><td>{link}</td>'
            f'<td>{e(row["verified"])}</td><td>{_link(row["log"])}</td>'
            f'<td>{e(row["detail"])}</td></tr>')
    state = " (interrupted)" if result.interrupted else ""
    return _PAGE.format(batch=e(result.batch_id), state=state, counts=counts,
                        rows="\n".join(body))


def _link(target: str, text: str | None = None) -> str:
    """A relative link; the target is a path inside the reports folder."""
    if not target:
        return ""
    href = "/".join(urllib.parse.quote(part) for part in target.split("/"))
    return f'<a href="{html.escape(href)}">{html.escape(text or target)}</a>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Batch {batch}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
tr.succeeded td:nth-child(3), tr.planned td:nth-child(3) {{ color: #070; }}
tr.failed td:nth-child(3), tr.crashed td:nth-child(3), tr.timed-out td:nth-child(3),
tr.rejected td:nth-child(3), tr.busy td:nth-child(3) {{ color: #a00; }}
</style></head><body>
<h1>Batch {batch}{state}</h1>
<p>{counts}</p>
<table><thead><tr><th>line</th><th>tenant</th><th>outcome</th><th>duration (s)</th>
<th>run folder</th><th>verified</th><th>log</th><th>detail</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the command line ----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``runbook batch``: 0 only when every tenant succeeded (planned, unconfirmed)."""
    args = _parser().parse_args(argv)
    if args.scheduler and args.executor != "dask":
        print("runbook batch: --scheduler needs --executor dask", file=sys.stderr)
        return 2
    try:
        return _main(args)
    except (BatchFileError, SchedulerUnreachable, params_mod.ParameterError) as exc:
        print(f"runbook batch: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    # Flags that apply to every row are judged once, not once a row.
    common = {name: params_mod.check_number(name, getattr(args, name))
              for name in ("wait_minutes", "poll_seconds")}
    rows, rejected = read_rows(args.tenants, common=common)
    for bad in rejected:
        print(f"{args.tenants}:{bad.line}: {bad.reason}", file=sys.stderr)

    from runbook.notebook import default_reports_dir

    result = run_batch(rows, workers=args.workers, confirm=args.confirm,
                       executor=args.executor, scheduler=args.scheduler,
                       reports_dir=args.reports or default_reports_dir(),
                       time_limit_s=args.time_limit * 60, rejected=rejected,
                       steps=args.steps)
    print(result.path / "summary.html")
    if result.interrupted:
        return 130
    return 0 if result.ok else 1


def _parser() -> argparse.ArgumentParser:
    from runbook.cli import Parser

    parser = Parser(
        prog="runbook batch",
        description="Run the migration chain for every tenant of a CSV file.")
    parser.add_argument("tenants", type=Path, metavar="TENANTS.csv",
                        help=f"columns: {', '.join(COLUMNS)}; the first four "
                        "are required; several domains separated by ';' or "
                        "spaces; relative paths are read from the file's folder")
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="tenants at once (default 1)")
    parser.add_argument("--confirm", action="store_true",
                        help="make the changes; without it every tenant only plans")
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="local: a process per tenant on this machine (default); "
                             "dask: a task per tenant on a dask.distributed "
                             "scheduler, or on a local cluster of --workers "
                             "processes when --scheduler is not given")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="a dask.distributed scheduler (with --executor dask)")
    parser.add_argument("--time-limit", type=_minutes, metavar="MINUTES",
                        default=DEFAULT_TIME_LIMIT_S / 60,
                        help="stop a tenant after this long (default 45)")
    parser.add_argument("--reports", type=Path, default=None)
    parser.add_argument("--steps", type=_step_list, default=None, metavar="S1,S2",
                        help="only these steps, e.g. 01-prerequisites")
    parser.add_argument("--wait-minutes", type=float, default=10.0,
                        help="step 5: how long to wait for mail flow")
    parser.add_argument("--poll-seconds", type=float, default=15.0)
    return parser


def _step_list(text: str) -> tuple[str, ...]:
    from runbook import chain

    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in steps if s not in chain.STEPS]
    if unknown or not steps:
        raise argparse.ArgumentTypeError(
            f"{unknown[0] if unknown else text!r} is not a step; the steps are "
            f"{', '.join(chain.STEPS)}")
    repeated = next((s for s in steps if steps.count(s) > 1), None)
    if repeated:
        raise argparse.ArgumentTypeError(f"{repeated!r} is named twice; name each step "
                                         "once")
    return steps


def _minutes(text: str) -> float:
    try:
        return params_mod.typed_number(text, "minutes", above_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _module_main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--tenant-process":
        return _tenant_process(int(argv[1]))
    return main(argv)


if __name__ == "__main__":
    # Run through the imported module, not this __main__ copy of it: the
    # tenant locks this process holds are registered in one module only, and
    # chain.run takes the same lock again through `runbook.batch`.
    from runbook import batch as _batch

    sys.exit(_batch._module_main(sys.argv[1:]))
