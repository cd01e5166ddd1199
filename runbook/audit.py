"""The audit record of one run: a folder a reviewer can trust.

One run of the runbook for one tenant leaves ``reports/<tenant>/<run-id>/``:

    run.json            who, where, which versions, parameters, steps, outcome
    events.jsonl        what happened, one JSON event a line, hash-chained
    inventory/          connectors and rules before and after
    backup/             every object removed, one JSON file each
    notebooks/          the executed notebooks and their HTML renderings
    report.html         the page a person reads first
    manifest.json       SHA-256 of every file above except events.jsonl

Several processes write to one record one after another (the chain runner and
each notebook kernel), so every append to events.jsonl and every rewrite of
run.json happens under an exclusive ``flock`` on events.jsonl.

Integrity. Each event line is ``{"seq", "at", "kind", "data", "prev", "hash"}``:
``prev`` is the SHA-256 of the previous line's bytes (64 zeros for the first),
``hash`` the SHA-256 of the line's own bytes up to the hash field, i.e. of the
event serialised without it. An edit anywhere in the file breaks the line it
touches; removing, inserting or moving lines breaks ``seq`` and ``prev``. A
writer killed mid-line leaves a torn last line: `verify` notes it, and the
next append cuts it off and records a ``torn-line-dropped`` event with the
fragment's bytes, so the chain stays whole and nothing is lost unsaid.
`RunRecord.finish` writes manifest.json over every other file and then the
last event, ``run-finished``, which carries the manifest's own SHA-256, so the
chain seals the files too. What no in-band check can catch is someone who
rewrites the whole chain consistently; the ``hash`` of the run-finished event
(the *seal*, printed by ``runbook audit verify``) closes that gap once it is
kept somewhere else, e.g. in the support ticket.

Secrets never land in the record: `redact` runs over event data, run.json
fields and JSON files, and over the executed notebooks at finish. The rule:

- a value under a key that names a secret (password, secret, token, key but
  not keyword, credential) is dropped, whatever it holds;
- a secret in force (`runbook.credentials.secret_values`: the environment
  variables and the password file) is masked wherever it occurs inside text,
  if it has at least `MIN_MASKED_SECRET` characters. A shorter one is not
  masked in text, only a WARNING says so: ``ch`` is a region and the end of
  every Swiss domain, so masking it would wreck the record (rollback could not
  read its parameters back) and the places of the masks would spell the
  password out. Such a password is weak anyway; use a long one;
- the run's parameters (`redact_parameters`) are kept as given: they passed
  `runbook.params.validate` (a tenant name, domains, a region, paths, numbers)
  and hold no secret, since a secret is never a parameter. A password equal
  to a parameter would be public knowledge, not a secret, so masking it there
  would only break resume and rollback.

Parameters are chained too: run-started carries them with the tenant, and
`verify` requires run.json to agree, so an edit of run.json's parameters in an
unfinished record shows; `RunRecord.chained_parameters` is what a resumed run
must use. A reopened run keeps the run.json its old manifest sealed in
``attempts/<n>/``.

Errors, one tree:

    AuditError                  base of everything raised here
    ├── NotARunFolder           also FileNotFoundError: no run.json/events.jsonl
    ├── UnsafePath              also ValueError: a path leaving the folder, or a
    │                           file the record manages itself
    ├── InvalidName             also ValueError: tenant or run id that is not
    │                           one safe path segment
    ├── RecordSealed            the run is finished; the folder takes no writes
    ├── RecordDamaged           events.jsonl cannot be read or extended
    ├── RecordNotIntact         `verify` found problems; nothing may go on from it
    └── RecordLocked            another process held the lock too long
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import functools
import getpass
import hashlib
import json
import logging
import math
import os
import platform
import re
import secrets as _random
import socket
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator

import runbook
from runbook import credentials, interrupts

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.html"
_MANAGED = frozenset({RUN_FILE, EVENTS_FILE, MANIFEST_FILE})
_UNSEALED = frozenset({EVENTS_FILE, MANIFEST_FILE})

BACKENDS = ("sandbox", "pwsh")
STEP_STATUSES = ("succeeded", "failed", "planned", "skipped")
RUN_STATUSES = ("succeeded", "failed", "planned", "cancelled")
_IDENTITY_FIELDS = frozenset({"tenant", "run_id", "backend", "started_at",
                              "operator", "host", "parameters"})
# run.json fields the run-started event carries too; `verify` compares them.
# sandbox_state is chained only where it is known at creation: a notebook run
# alone makes its sandbox tenant later (`runbook.notebook.sandbox_state`).
_CHAINED_FIELDS = ("tenant", "run_id", "operator", "host", "backend", "parameters",
                   "sandbox_state")

REDACTED = "[redacted]"
SECRET_ENV_VARS = credentials.SECRET_ENV_VARS
# Secrets shorter than this are not masked inside text (see the module docstring).
MIN_MASKED_SECRET = 8
_SECRET_KEY = re.compile(
    r"password|secret|token|key(?!word)|certificate_password|credential", re.I
)
# Get-ConnectionInformation's token metadata (exchange-objects §7) says when a
# login expires; it holds no secret and the reviewer wants it.
_NOT_SECRET_KEYS = frozenset({"tokenexpirytimeutc", "tokenstatus"})

_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_KIND = re.compile(r"[a-z][a-z0-9-]{0,47}")
_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"\}\Z')
_EVENT_KEYS = ("seq", "at", "kind", "data", "prev", "hash")
ZERO_HASH = "0" * 64

LOCK_TIMEOUT_S = 30.0


# -- errors -----------------------------------------------------------------


class AuditError(Exception):
    """Base of the audit record's errors."""


class NotARunFolder(AuditError, FileNotFoundError):
    """The path holds no run record."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(errno.ENOENT, f"not a run folder ({reason})", str(path))

    def __str__(self) -> str:
        return f"not a run folder: {self.path} ({self.reason})"


class UnsafePath(AuditError, ValueError):
    """A relative path that would leave the run folder or overwrite its own files."""

    def __init__(self, relpath: object, reason: str):
        self.relpath = relpath
        self.reason = reason
        super().__init__(f"refused path {relpath!r}: {reason}")


class InvalidName(AuditError, ValueError):
    """A tenant or run id that cannot be one safe folder name."""

    def __init__(self, what: str, value: object, allowed: str):
        self.what = what
        self.value = value
        self.allowed = allowed
        super().__init__(f"{what} {value!r} is not allowed: {allowed}")


class RecordSealed(AuditError):
    """The run is finished; its files are sealed by manifest.json."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(f"run record {path} is finished and sealed; nothing more "
                         "can be written to it")


class RecordDamaged(AuditError):
    """events.jsonl holds a line that is not an event; the chain cannot go on."""

    def __init__(self, path: Path, line: int, reason: str):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{path} line {line}: {reason}")


class RecordNotIntact(AuditError):
    """`verify` found the record changed or cut short; carries every problem."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(f"{path} is not intact (runbook audit verify): "
                         f"{self.problems[0]}"
                         + (f"; and {more} more problem{'s' * (more > 1)}"
                            if more else ""))


class RecordLocked(AuditError):
    """Another process kept events.jsonl locked longer than the timeout."""

    def __init__(self, path: Path, timeout_s: float):
        self.path = Path(path)
        self.timeout_s = timeout_s
        super().__init__(f"{path} stayed locked by another process for more than "
                         f"{timeout_s:g} s")


# -- redaction --------------------------------------------------------------


def redact(obj: Any) -> Any:
    """Return a copy of `obj` with secrets replaced by ``"[redacted]"``.

    Values under keys that name a secret are dropped (any case, any depth),
    and the secrets in force that are long enough to tell apart from ordinary
    text are masked wherever they occur inside a string; the module docstring
    gives the rule. Dataclasses become dicts, tuples and sets lists,
    non-finite floats text.
    """
    return _redact(obj, _maskable_secrets())


def redact_parameters(parameters: Mapping[str, Any]) -> dict:
    """The run's parameters as recorded: secret-named keys dropped, the values
    of validated parameters (`runbook.params.NAMES`) kept exactly, anything
    else redacted as `redact` does."""
    from runbook import params  # params pulls in idna; only records need it

    values = _maskable_secrets()
    return {key: REDACTED if _is_secret_key(key)
            else _redact(value, []) if key in params.NAMES
            else _redact(value, values)
            for key, value in parameters.items()}


def _maskable_secrets() -> list[str]:
    values = credentials.secret_values()
    short = [v for v in values if len(v) < MIN_MASKED_SECRET]
    if short:
        _warn_short_secret(len(short[0]))
    return [v for v in values if len(v) >= MIN_MASKED_SECRET]


@functools.cache
def _warn_short_secret(length: int) -> None:
    log.warning("a secret of %d characters is too short to be masked inside text "
                "(at least %d are needed); values under secret-named keys are still "
                "dropped. Use a longer certificate password.", length,
                MIN_MASKED_SECRET)


def _is_secret_key(key: Any) -> bool:
    return (isinstance(key, str) and _SECRET_KEY.search(key) is not None
            and key.lower() not in _NOT_SECRET_KEYS)


def _redact(obj: Any, values: list[str]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {_mask(k, values) if isinstance(k, str) else k:
                REDACTED if _is_secret_key(k) else _redact(v, values)
                for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return [_redact(v, values) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [_redact(v, values) for v in obj]
    if isinstance(obj, str):
        return _mask(obj, values)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def _mask(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, REDACTED)
    return text


# -- small helpers ----------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a Z: ``2026-12-04T10:15:30.123Z``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment.isoformat(timespec="milliseconds") + "Z"
    return moment.isoformat(timespec="milliseconds")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_filename(name: str, *, limit: int = 80) -> str:
    """A file name for an object name such as ``[SEPPmail] Out/bound``.

    Anything but letters, digits, dot, dash and underscore becomes a dash, and
    a short hash of the full name keeps ``a/b`` and ``a\\b`` apart, which
    matters: slash-named legacy connectors are exactly the ones backed up
    (seppmail365cloud.md section 5.1).
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:limit] or "object"
    return f"{slug}-{sha256_hex(name.encode('utf-8'))[:8]}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return iso(obj)
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / pandas scalars
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable: {obj!r}")


def _dumps_compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, default=_json_default).encode("utf-8")


def _dumps_file(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False,
                      default=_json_default)
    return (text + "\n").encode("utf-8")


def _make_private_dirs(path: Path) -> None:
    """Create `path` and missing parents as 0700; existing ones are left alone."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename) with mode 0600, durable on return."""
    _make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # mkstemp's 0600 is still subject to the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (containers)
        return f"uid {os.getuid()}"


def _check_name(what: str, value: object, pattern: re.Pattern, allowed: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidName(what, value, allowed)
    return value


# -- the event line ---------------------------------------------------------


def _event_line(seq: int, kind: str, data: dict, prev: str) -> bytes:
    """One line without its newline; ``hash`` covers everything before it."""
    body = _dumps_compact({"seq": seq, "at": iso(utc_now()), "kind": kind,
                           "data": data, "prev": prev})
    digest = sha256_hex(body).encode("ascii")
    return body[:-1] + b',"hash":"' + digest + b'"}'


def _line_problem(raw: bytes) -> str | None:
    """Why `raw` is not a well-formed, self-consistent event line, or None."""
    tail = _HASH_TAIL.search(raw)
    if tail is None:
        return "no hash field at the end of the line"
    if sha256_hex(raw[:tail.start()] + b"}") != tail.group(1).decode("ascii"):
        return "content does not match its hash (the line was changed)"
    try:
        event = json.loads(raw)
    except ValueError as exc:
        return f"not valid JSON ({exc})"
    if not isinstance(event, dict) or tuple(event) != _EVENT_KEYS:
        return f"fields are not {', '.join(_EVENT_KEYS)}"
    return None


def _read_tail(fd: int) -> tuple[bytes | None, bytes | None]:
    """The last complete line and the torn bytes after it (either may be None)."""
    size = os.fstat(fd).st_size
    buf, pos = b"", size
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        last_nl = buf.rfind(b"\n")
        if last_nl != -1 and (buf.rfind(b"\n", 0, last_nl) != -1 or pos == 0):
            break
    last_nl = buf.rfind(b"\n")
    if last_nl == -1:
        return None, buf or None
    start = buf.rfind(b"\n", 0, last_nl)
    return buf[start + 1:last_nl], buf[last_nl + 1:] or None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the record -------------------------------------------------------------


class RunRecord:
    """The audit folder of one run; see the module docstring for its layout."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunRecord({str(self.path)!r})"

    @classmethod
    def create(cls, reports_dir: Path, tenant: str, *, parameters: dict,
               operator: str | None = None, run_id: str | None = None,
               backend: str = "sandbox", sandbox_state: str | None = None,
               ) -> "RunRecord":
        """Make ``reports_dir/<tenant>/<run-id>/`` and write its first event."""
        _check_name("tenant", tenant, _TENANT,
                    "lower-case letters, digits and dashes, 1-63, not starting "
                    "with a dash")
        if run_id is not None:
            _check_name("run id", run_id, _RUN_ID,
                        "letters, digits, dash and underscore, 1-64")
        if backend not in BACKENDS:
            raise InvalidName("backend", backend, " or ".join(BACKENDS))

        started = utc_now()
        folder = cls._new_folder(Path(reports_dir) / tenant, run_id, started)
        run: dict[str, Any] = {
            "tenant": tenant,
            "run_id": folder.name,
            "backend": backend,
            "status": "running",
            "operator": operator or _operator(),
            "host": socket.gethostname(),
            "started_at": iso(started),
            "ended_at": None,
            "versions": {"runbook": runbook.__version__,
                         "python": platform.python_version(),
                         "platform": platform.platform()},
            "steps": [],
        }
        if backend == "sandbox":
            run["sandbox_state"] = sandbox_state
        run = redact(run)
        # After redact: a validated parameter is never masked (module docstring).
        run["parameters"] = redact_parameters(parameters)

        record = cls(folder)
        _write_private(folder / EVENTS_FILE, b"")
        _write_private(folder / RUN_FILE, _dumps_file(run))
        started_data = {key: run[key] for key in _CHAINED_FIELDS if key in run}
        with record._locked() as fd:
            record._append(fd, "run-started", started_data, redacted=True)
        log.info("run record %s created", folder)
        return record

    @staticmethod
    def _new_folder(tenant_dir: Path, run_id: str | None, started: datetime) -> Path:
        _make_private_dirs(tenant_dir)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        for _ in range(8):  # only a generated id can collide; retry a few times
            folder = tenant_dir / (run_id or f"{stamp}-{_random.token_hex(2)}")
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:
                if run_id is not None:
                    raise
                continue
            os.chmod(folder, 0o700)
            return folder
        raise FileExistsError(f"no free run id under {tenant_dir} for {stamp}")

    @classmethod
    def open(cls, path: Path) -> "RunRecord":
        """Open an existing record; `NotARunFolder` names the path otherwise."""
        folder = Path(path)
        for name in (RUN_FILE, EVENTS_FILE):
            if not (folder / name).is_file():
                raise NotARunFolder(folder, f"no {name}")
        return cls(folder)

    # -- events -------------------------------------------------------------

    def event(self, kind: str, **data: Any) -> dict:
        """Append one event (data redacted) under the lock and return it."""
        _check_name("event kind", kind, _KIND, "lower-case words joined by dashes")
        with self._locked() as fd:
            return self._append(fd, kind, data)

    def events(self) -> list[dict]:
        """Every complete event; a torn last line (an interrupted write) is left out."""
        raw = (self.path / EVENTS_FILE).read_bytes()
        lines = raw.split(b"\n")[:-1]
        events = []
        for number, line in enumerate(lines, 1):
            try:
                events.append(json.loads(line))
            except ValueError as exc:
                raise RecordDamaged(self.path / EVENTS_FILE, number,
                                    f"not valid JSON ({exc})") from exc
        return events

    def chained_parameters(self) -> dict:
        """The run's parameters as the hash chain holds them (run-started).

        A resumed run takes these, not run.json's, which a person could edit
        unnoticed while the record is unfinished. Raises `RecordDamaged` when
        the first event does not hash right or carries no parameters (a record
        written before parameters were chained).
        """
        path = self.path / EVENTS_FILE
        with open(path, "rb") as handle:
            first = handle.readline()
        if not first.endswith(b"\n"):
            raise RecordDamaged(path, 1, "no complete first event")
        problem = _line_problem(first[:-1])
        event = json.loads(first) if problem is None else None
        if event is not None and (event["kind"] != "run-started"
                                  or event["prev"] != ZERO_HASH):
            problem = "the first event is not a run-started chained to 64 zeros"
        if problem is None and not isinstance(event["data"].get("parameters"), dict):
            problem = "run-started holds no parameters (written by an older runbook)"
        if problem is not None:
            raise RecordDamaged(path, 1, problem)
        return dict(event["data"]["parameters"])

    def chained_steps(self) -> list[tuple[str, str]]:
        """Every step as the hash chain holds it, in order: (name, status), where
        a step started and not finished is "running". A resumed run decides from
        these which steps are done, not from run.json's copy."""
        return steps_of(self.events())

    @contextmanager
    def _locked(self) -> Iterator[int]:
        path = self.path / EVENTS_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError as exc:
            raise NotARunFolder(self.path, f"no {EVENTS_FILE}") from exc
        try:
            # A Ctrl-C waits until run.json and events.jsonl agree again.
            with interrupts.held():
                self._acquire(fd, path)
                yield fd
        finally:
            os.close(fd)  # closing releases the flock

    @staticmethod
    def _acquire(fd: int, path: Path) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        pause = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RecordLocked(path, LOCK_TIMEOUT_S) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _append(self, fd: int, kind: str, data: dict, *,
                redacted: bool = False) -> dict:
        seq, prev = self._next(fd)
        line = _event_line(seq, kind, data if redacted else redact(data), prev)
        _write_all(fd, line + b"\n")
        os.fsync(fd)
        log.debug("event %d %s", seq, kind)
        return json.loads(line)

    def _next(self, fd: int) -> tuple[int, str]:
        """Seq and prev hash for the next line, after dropping a torn tail."""
        if (self.path / MANIFEST_FILE).exists():
            raise RecordSealed(self.path)
        last, torn = _read_tail(fd)
        seq, prev = 1, ZERO_HASH
        if last is not None:
            seq, prev = self._seq_after(last) + 1, sha256_hex(last)
        if torn is None:
            return seq, prev

        # A writer was killed mid-line. The fragment was never chained, so it
        # is cut off and described by an event in its place.
        size = os.fstat(fd).st_size
        os.ftruncate(fd, size - len(torn))
        log.warning("%s: dropped a torn last line of %d bytes", self.path, len(torn))
        line = _event_line(seq, "torn-line-dropped", redact(
            {"line": seq, "bytes": len(torn), "sha256": sha256_hex(torn),
             "text": torn.decode("utf-8", "replace")}), prev)
        _write_all(fd, line + b"\n")
        return seq + 1, sha256_hex(line)

    def _seq_after(self, last: bytes) -> int:
        problem = _line_problem(last)
        if problem is None:
            seq = json.loads(last)["seq"]
            if isinstance(seq, int):
                return seq
            problem = f"seq {seq!r} is not a number"
        count = (self.path / EVENTS_FILE).read_bytes().count(b"\n")
        raise RecordDamaged(self.path / EVENTS_FILE, count, problem)

    # -- files --------------------------------------------------------------

    def write_json(self, relpath: str, obj: Any) -> Path:
        """Write `obj` (redacted, datetimes as ISO) to a file inside the folder."""
        return self._write(relpath, _dumps_file(redact(obj)))

    def write_text(self, relpath: str, text: str) -> Path:
        """Write `text` (secret values masked) to a file inside the folder."""
        return self._write(relpath, redact(text).encode("utf-8"))

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.path_of(relpath).read_text("utf-8"))

    def path_of(self, relpath: str) -> Path:
        """The path of `relpath` in the folder; `UnsafePath` if it would leave it."""
        return self._inside(relpath, writing=False)

    def _write(self, relpath: str, data: bytes) -> Path:
        target = self._inside(relpath, writing=True)
        if (self.path / MANIFEST_FILE).exists():
            raise RecordSealed(self.path)
        _write_private(target, data)
        return target

    def _inside(self, relpath: str, *, writing: bool) -> Path:
        """`relpath` as a path in the folder; refuses anything that could leave it."""
        if not isinstance(relpath, str) or not relpath:
            raise UnsafePath(relpath, "not a non-empty relative path")
        if "\\" in relpath or "\0" in relpath:
            raise UnsafePath(relpath, "backslash or NUL in the path; use "
                             "runbook.audit.safe_filename for object names")
        if PurePosixPath(relpath).is_absolute() or PureWindowsPath(relpath).drive:
            raise UnsafePath(relpath, "absolute path")
        parts = relpath.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafePath(relpath, "empty, '.' or '..' segment")
        if writing and relpath in _MANAGED:
            raise UnsafePath(relpath, "managed by the record itself")
        target = self.path.joinpath(*parts)
        if not target.resolve().is_relative_to(self.path.resolve()):
            raise UnsafePath(relpath, "leaves the run folder through a symbolic link")
        return target

    # -- run.json -----------------------------------------------------------

    def run(self) -> dict:
        return json.loads((self.path / RUN_FILE).read_text("utf-8"))

    def update_run(self, **fields: Any) -> dict:
        """Merge `fields` into run.json (atomically, under the lock)."""
        fixed = _IDENTITY_FIELDS.intersection(fields)
        if fixed:
            raise ValueError(f"run.json fields {sorted(fixed)} are fixed at creation")
        with self._locked():
            return self._update_run_locked(fields)

    def _update_run_locked(self, fields: dict) -> dict:
        if (self.path / MANIFEST_FILE).exists():
            raise RecordSealed(self.path)
        run = self.run()
        run.update(redact(fields))
        _write_private(self.path / RUN_FILE, _dumps_file(run))
        return run

    def step_started(self, name: str, notebook: str) -> None:
        """Add a running step to run.json and a ``step-started`` event.

        `notebook` is the executed notebook's path inside the folder, e.g.
        ``notebooks/01-prerequisites.ipynb``. A step of the same name that is
        still running must be finished first (a resumed chain marks the
        interrupted attempt failed, then starts a new one).
        """
        with self._locked() as fd:
            run = self.run()
            if any(s["name"] == name and s["status"] == "running"
                   for s in run["steps"]):
                raise ValueError(f"step {name!r} is already running in {self.path}")
            entry = {"name": name, "notebook": notebook, "status": "running",
                     "started_at": iso(utc_now())}
            self._update_run_locked({"steps": [*run["steps"], entry]})
            self._append(fd, "step-started", {"step": name, "notebook": notebook})

    def step_finished(self, name: str, status: str, *,
                      error: dict | None = None) -> None:
        """Close the running step `name`: status, end, duration and error."""
        if status not in STEP_STATUSES:
            raise ValueError(f"step status {status!r} is not one of "
                             f"{', '.join(STEP_STATUSES)}")
        if error is not None and not isinstance(error, Mapping):
            raise TypeError(f"error must be a dict like {{'cell', 'ename', "
                            f"'evalue'}}, not {type(error).__name__}")
        with self._locked() as fd:
            steps = self.run()["steps"]
            running = [s for s in steps
                       if s["name"] == name and s["status"] == "running"]
            if not running:
                raise ValueError(f"step {name!r} is not running in {self.path}")
            entry = running[-1]
            ended = utc_now()
            started = datetime.fromisoformat(entry["started_at"])
            duration = round((ended - started).total_seconds(), 3)
            entry.update(status=status, ended_at=iso(ended), duration_s=duration,
                         error=dict(error) if error else None)
            self._update_run_locked({"steps": steps})
            self._append(fd, "step-finished", {"step": name, "status": status,
                                               "duration_s": duration,
                                               "error": entry["error"]})

    # -- the end ------------------------------------------------------------

    def finish(self, status: str) -> Path:
        """Record the outcome, render the pages, seal the files; returns the folder.

        Rendering happens before sealing because the pages are sealed too. A
        page that fails to render is recorded as an event and the record is
        sealed anyway: evidence left unsealed is worth less than a missing
        summary page. The report's own failure is raised after sealing.

        A Ctrl-C meanwhile waits for the seal (`runbook.interrupts`): run.json
        saying the run ended with no seal behind it is a record `verify`
        fails and `resume` refuses.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of "
                             f"{', '.join(RUN_STATUSES)}")
        with interrupts.held():
            return self._finish(status)

    def _finish(self, status: str) -> Path:
        from runbook import report  # report reads records; import late, no cycle

        with self._locked():
            self._update_run_locked({"status": status, "ended_at": iso(utc_now()),
                                     "versions": self._versions_at_the_end()})

        self._scrub_notebooks()
        self._render_notebooks(report)
        report_error = self._render_report(report)
        self._tighten_permissions()

        with self._locked() as fd:
            seq, prev = self._next(fd)
            manifest = _dumps_file(build_manifest(self.path))
            _write_private(self.path / MANIFEST_FILE, manifest)
            line = _event_line(seq, "run-finished", {
                "status": status, "manifest_sha256": sha256_hex(manifest),
                "events": seq}, prev)
            _write_all(fd, line + b"\n")
            os.fsync(fd)
        log.info("run record %s finished: %s, seal %s", self.path, status,
                 json.loads(line)["hash"])
        if report_error is not None:
            raise report_error
        return self.path

    def _versions_at_the_end(self) -> dict:
        run = self.run()
        try:
            events = self.events()
        except RecordDamaged:  # finish still seals; verify will name the line
            events = []
        return final_versions(run.get("versions") or {}, events)

    def reopen(self, reason: str) -> str:
        """Unseal a finished run so that a resumed chain can go on; returns the archive.

        The finished attempt stays verifiable: its manifest, report.html and
        notebooks/ move to ``attempts/<n>/`` (the notebooks would otherwise be
        overwritten by the rerun), a copy of run.json as sealed goes with them
        (the rerun rewrites run.json), and a ``run-reopened`` event records the
        manifest's SHA-256, which must equal the one in the run-finished just
        before it. The next `finish` seals the archive with everything else.
        """
        with self._locked() as fd:
            manifest = self.path / MANIFEST_FILE
            if not manifest.exists():
                raise ValueError(f"run record {self.path} is not finished; there is "
                                 "nothing to reopen")
            digest = sha256_hex(manifest.read_bytes())
            archive = f"attempts/{len(list(self.path.glob('attempts/*'))) + 1}"
            _make_private_dirs(self.path / archive)
            os.replace(manifest, self.path / archive / MANIFEST_FILE)
            moved = [rel for rel in (REPORT_FILE, "notebooks")
                     if (self.path / rel).exists()]
            for rel in moved:
                os.replace(self.path / rel, self.path / archive / rel)
            # run.json goes on changing; its sealed state stays with the manifest.
            _write_private(self.path / archive / RUN_FILE,
                           (self.path / RUN_FILE).read_bytes())
            self._append(fd, "run-reopened", {"reason": reason, "archive": archive,
                                              "manifest_sha256": digest,
                                              "moved": moved, "copied": [RUN_FILE]})
            self._update_run_locked({"status": "running", "ended_at": None})
        log.info("run record %s reopened (%s); attempt archived in %s", self.path,
                 reason, archive)
        return archive

    def _scrub_notebooks(self) -> None:
        """Redact the executed notebooks, which papermill wrote without us."""
        for path in sorted(self.path.rglob("*.ipynb")):
            text = path.read_text("utf-8", errors="replace")
            try:
                original = json.loads(text)
            except ValueError:  # a kernel died mid-write: mask the values at least
                original, cleaned = text, redact(text)
                new_text = cleaned
            else:
                cleaned = redact(original)
                new_text = json.dumps(cleaned, ensure_ascii=False, indent=1) + "\n"
            if cleaned != original:
                log.warning("%s: secrets removed from the executed notebook", path)
                _write_private(path, new_text.encode("utf-8"))
                self.event("secrets-scrubbed", file=self._rel(path))

    def _render_notebooks(self, report: Any) -> None:
        for path in sorted(self.path.glob("notebooks/*.ipynb")):
            page = path.with_suffix(".html")
            if page.exists() and page.stat().st_mtime_ns >= path.stat().st_mtime_ns:
                continue  # rendered from this very notebook (the chain does it early)
            try:
                report.render_notebook(self.path, self._rel(path))
            except Exception as exc:  # one broken notebook must not block sealing
                log.warning("%s: not rendered to HTML: %s", path, exc)
                self.event("notebook-render-failed", file=self._rel(path),
                           error=f"{type(exc).__name__}: {exc}")

    def _render_report(self, report: Any) -> Exception | None:
        try:
            report.render_report(self.path)
        except Exception as exc:
            log.error("%s: report.html not rendered: %s", self.path, exc)
            self.event("report-render-failed", error=f"{type(exc).__name__}: {exc}")
            return exc
        return None

    def _tighten_permissions(self) -> None:
        """Papermill and nbconvert write with the umask; the record wants 0600/0700."""
        for root, dirs, files in os.walk(self.path):
            for name in dirs:
                path = Path(root, name)
                if not path.is_symlink():  # build_manifest refuses links anyway
                    os.chmod(path, 0o700)
            for name in files:
                path = Path(root, name)
                if not path.is_symlink():
                    os.chmod(path, 0o600)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.path).as_posix()


def final_versions(versions: dict, events: list[dict]) -> dict:
    """run.json's versions completed by the last ``versions`` event of a step.

    Each step's bridge reports pwsh, ExchangeOnlineManagement and the installed
    seppmail365cloud versions when it connects; the last report is the one the
    run ended with (step 2 installs a module, so the first is not). The
    bridge's ``host`` (pwsh or sandbox) becomes ``bridge``, apart from the
    machine's host name in run.json.
    """
    merged = dict(versions)
    reported = [e["data"] for e in events if e.get("kind") == "versions"]
    if reported:
        last = {k: v for k, v in reported[-1].items() if k not in ("step", "runbook")}
        if "host" in last:
            last["bridge"] = last.pop("host")
        merged.update(last)
    return merged


def build_manifest(folder: Path) -> dict:
    """SHA-256 and size of every sealed file, by POSIX path inside the folder."""
    files = {}
    for rel, path in _sealed_files(folder):
        if path.is_symlink():
            raise UnsafePath(rel, "a symbolic link in the run folder cannot be sealed")
        data = path.read_bytes()
        files[rel] = {"sha256": sha256_hex(data), "bytes": len(data)}
    return {"schema": 1, "algorithm": "sha256", "created_at": iso(utc_now()),
            "files": files}


def _sealed_files(folder: Path) -> list[tuple[str, Path]]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        # os.walk does not enter a linked folder; list the link so it is seen
        linked = [name for name in dirs if Path(root, name).is_symlink()]
        for name in sorted(files + linked):
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel not in _UNSEALED:
                found.append((rel, path))
    return found


# -- verification -----------------------------------------------------------


@dataclass
class Verification:
    """What `verify` found: ok unless a problem was found; notes never fail it."""

    ok: bool
    problems: list[str]
    events: int
    files: int = 0
    notes: list[str] = field(default_factory=list)
    finished: bool = False
    seal: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"intact: {self.events} events, {self.files} files"
        return self.problems[0]


def verify(path: Path) -> Verification:
    """Check a run folder: the event chain, run.json, and the sealed files.

    An unfinished run (no manifest.json) is checked up to its last complete
    event and passes with a note; a torn last line is a note there too. Once
    the run is finished, the manifest, the files and the run-finished event
    must all agree, and a torn line is a problem. Either way run.json must
    agree with the chain: its identity and parameters with run-started, its
    status with the last run-finished. A run.json that says the run finished
    where no run-finished follows the last reopen is a problem: the record was
    cut short. That includes a run killed while `finish` renders and seals (a
    few seconds in which run.json already has the status); its record then
    fails verify and cannot be resumed, which a new run replaces.
    """
    folder = Path(path)
    result = Verification(ok=False, problems=[], events=0)
    for name in (RUN_FILE, EVENTS_FILE):
        if not (folder / name).is_file():
            result.problems.append(f"not a run folder: {folder} (no {name})")
            return result

    sealed = (folder / MANIFEST_FILE).exists()
    lines = (folder / EVENTS_FILE).read_bytes().split(b"\n")
    torn = lines.pop()
    events = _check_chain(lines, result)
    _check_torn(torn, len(lines) + 1, sealed, result)
    run = _read_run_file(folder, result)
    if run is not None:
        _check_run_file(run, events, result)
        _check_steps(run, events, sealed, result)
    _check_attempts(folder, events, result)
    if sealed:
        _check_manifest(folder, events, result)
    else:
        _check_unfinished(events, result)
    if run is not None:
        _check_status(run, events, result)

    result.ok = not result.problems
    return result


def _check_chain(lines: list[bytes], result: Verification) -> list[dict]:
    """Events up to the first broken line; that line becomes the problem."""
    events: list[dict] = []
    for number, raw in enumerate(lines, 1):
        problem = _line_problem(raw)
        event = json.loads(raw) if problem is None else None
        if event is not None:
            problem = _link_problem(event, number, lines)
        if problem is not None:
            result.problems.append(f"{EVENTS_FILE} line {number}: {problem}")
            break
        events.append(event)
    result.events = len(events)
    if events:
        result.seal = events[-1]["hash"]
    return events


def _link_problem(event: dict, number: int, lines: list[bytes]) -> str | None:
    if event["seq"] != number:
        return (f"seq {event['seq']!r} where {number} belongs (an event was "
                "removed, inserted or moved)")
    expected = sha256_hex(lines[number - 2]) if number > 1 else ZERO_HASH
    if event["prev"] != expected:
        return (f"prev does not match the SHA-256 of line {number - 1} (that line "
                "was changed, or this one moved)" if number > 1
                else "prev of the first event is not 64 zeros")
    if number == 1 and event["kind"] != "run-started":
        return f"the first event is {event['kind']!r}, not 'run-started'"
    after_finish = (number > 1
                    and json.loads(lines[number - 2])["kind"] == "run-finished")
    if after_finish and event["kind"] != "run-reopened":
        return "an event after run-finished"
    if event["kind"] == "run-reopened" and not after_finish:
        return "run-reopened where no run-finished comes just before"
    return None


def _check_torn(torn: bytes, number: int, sealed: bool, result: Verification) -> None:
    if not torn:
        return
    if sealed:
        result.problems.append(f"{EVENTS_FILE} line {number}: an incomplete line "
                               f"({len(torn)} bytes) in a finished record")
    else:
        result.notes.append(f"{EVENTS_FILE} line {number}: torn last line "
                            f"({len(torn)} bytes) ignored; a write was interrupted")


def _read_run_file(folder: Path, result: Verification) -> dict | None:
    """run.json as the checks below compare it; None (and a problem when it is
    not JSON) where it is no object."""
    try:
        run = json.loads((folder / RUN_FILE).read_text("utf-8"))
    except ValueError as exc:
        result.problems.append(f"{RUN_FILE}: not valid JSON ({exc})")
        return None
    return run if isinstance(run, dict) else None


def _check_run_file(run: dict, events: list[dict], result: Verification) -> None:
    if not events:
        return
    started = events[0]["data"]
    for key in _CHAINED_FIELDS:
        if key not in started:
            if key == "parameters":
                result.notes.append(f"{EVENTS_FILE} line 1 holds no parameters (an "
                                    f"older record); {RUN_FILE}'s are not checked")
            continue
        if key == "sandbox_state" and started[key] is None:
            continue  # made later by a notebook run alone; see _CHAINED_FIELDS
        if key == "parameters" and isinstance(run.get(key), dict) and isinstance(
                started[key], dict):
            _compare_parameters(run[key], started[key], result)
        elif run.get(key, _ABSENT) != started[key]:
            result.problems.append(f"{RUN_FILE}: {key} {run.get(key)!r} differs from "
                                   f"{EVENTS_FILE} line 1 ({started[key]!r})")


_ABSENT = object()


def _compare_parameters(given: dict, chained: dict, result: Verification) -> None:
    for key in sorted(set(given) | set(chained)):
        mine, theirs = given.get(key, _ABSENT), chained.get(key, _ABSENT)
        if mine == theirs and type(mine) is type(theirs):
            continue
        shown = "absent" if mine is _ABSENT else repr(mine)
        was = "absent" if theirs is _ABSENT else repr(theirs)
        result.problems.append(f"{RUN_FILE}: parameters.{key} {shown} differs from "
                               f"{EVENTS_FILE} line 1 ({was})")


def steps_of(events: list[dict]) -> list[tuple[str, str]]:
    """(name, status) of each step-started, closed by its step-finished."""
    steps: list[list[str]] = []
    for event in events:
        name = event["data"].get("step")
        if event["kind"] == "step-started":
            steps.append([name, "running"])
        elif event["kind"] == "step-finished":
            running = [s for s in steps if s[0] == name and s[1] == "running"]
            if running:
                running[-1][1] = event["data"].get("status")
    return [(name, status) for name, status in steps]


def _check_steps(run: dict, events: list[dict], sealed: bool,
                 result: Verification) -> None:
    """run.json's steps must be the chain's. run.json is written just before
    each step event, so an unfinished record may be one write ahead."""
    try:
        given = [(s["name"], s["status"]) for s in run.get("steps", [])]
    except (TypeError, KeyError, AttributeError):
        return
    chained = steps_of(events)
    if given == chained:
        return
    if not sealed and _one_write_ahead(given, chained):
        result.notes.append(f"{RUN_FILE}: its last step is one write ahead of "
                            f"{EVENTS_FILE} (the run stopped between the two)")
        return
    at = next((n for n, (a, b) in enumerate(zip(given, chained)) if a != b),
              min(len(given), len(chained)))
    mine = given[at] if at < len(given) else "absent"
    theirs = chained[at] if at < len(chained) else "absent"
    result.problems.append(f"{RUN_FILE}: step {at + 1} is {mine!r} where the events "
                           f"say {theirs!r}")


def _one_write_ahead(given: list, chained: list) -> bool:
    if given[:-1] == chained and given and given[-1][1] == "running":
        return True          # step-started was not appended yet
    return (len(given) == len(chained) and given[:-1] == chained[:-1] and given
            and given[-1][0] == chained[-1][0] and chained[-1][1] == "running")


def _check_status(run: dict, events: list[dict], result: Verification) -> None:
    """run.json's status must be what the chain says about the end of the run."""
    ends = [e for e in events if e["kind"] in ("run-finished", "run-reopened")]
    last = ends[-1] if ends else None
    status = run.get("status")
    if last is not None and last["kind"] == "run-finished":
        if status != last["data"].get("status"):
            result.problems.append(f"{RUN_FILE}: status {status!r} differs from "
                                   f"run-finished ({EVENTS_FILE} line {last['seq']}: "
                                   f"{last['data'].get('status')!r})")
    elif status in RUN_STATUSES:
        after = f" after line {last['seq']}" if last is not None else ""
        result.problems.append(
            f"{RUN_FILE}: status {status!r} says the run finished, but "
            f"{EVENTS_FILE} has no run-finished{after} (events verified up to line "
            f"{len(events)}): the record was cut short or its seal removed, or the "
            "run died while sealing")


def _check_attempts(folder: Path, events: list[dict], result: Verification) -> None:
    """Each reopened attempt: its archived manifest and the files moved with it."""
    for index, event in enumerate(events):
        if event["kind"] != "run-reopened":
            continue
        data, finished = event["data"], events[index - 1]["data"]
        where = f"{EVENTS_FILE} line {event['seq']}"
        archive = data.get("archive")
        if not isinstance(archive, str) or not re.fullmatch(r"attempts/\d+", archive):
            result.problems.append(f"{where}: archive {archive!r} is not attempts/<n>")
            continue
        raw_path = folder / archive / MANIFEST_FILE
        raw = raw_path.read_bytes() if raw_path.is_file() else None
        if raw is None or sha256_hex(raw) != data.get("manifest_sha256") or (
                data.get("manifest_sha256") != finished.get("manifest_sha256")):
            result.problems.append(f"{archive}/{MANIFEST_FILE}: missing or not the "
                                   f"manifest sealed before {where}")
            continue
        kept = [*(data.get("moved") or []), *(data.get("copied") or [])]
        _check_archived_files(folder, archive, json.loads(raw)["files"], kept, result)


def _check_archived_files(folder: Path, archive: str, listed: dict,
                          moved: list[str], result: Verification) -> None:
    root = folder / archive
    on_disk = {rel: path for rel, path in _sealed_files(root)
               if rel != MANIFEST_FILE}
    expected = {rel for rel in listed
                if any(rel == m or rel.startswith(m + "/") for m in moved)}
    for rel in sorted(expected | set(on_disk)):
        path = on_disk.get(rel)
        name = f"{archive}/{rel}"
        if rel not in expected:
            result.problems.append(f"{name}: not part of the archived attempt")
        elif path is None:
            result.problems.append(f"{name}: missing from the archived attempt")
        elif path.is_symlink() or (sha256_hex(path.read_bytes())
                                   != listed[rel].get("sha256")):
            result.problems.append(f"{name}: SHA-256 differs from "
                                   f"{archive}/{MANIFEST_FILE}")


def _check_unfinished(events: list[dict], result: Verification) -> None:
    ends = [e for e in events if e["kind"] in ("run-finished", "run-reopened")]
    if ends and ends[-1]["kind"] == "run-finished":
        result.problems.append(f"{MANIFEST_FILE}: missing, but {EVENTS_FILE} line "
                               f"{ends[-1]['seq']} records the run as finished")
        return
    result.notes.append(f"not finished: no {MANIFEST_FILE} yet; events verified up "
                        f"to line {len(events)}, files are not sealed")


def _check_manifest(folder: Path, events: list[dict], result: Verification) -> None:
    raw = (folder / MANIFEST_FILE).read_bytes()
    try:
        listed = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        result.problems.append(f"{MANIFEST_FILE}: not a manifest ({exc})")
        return
    result.finished = True
    _check_seal(raw, events, result)
    _check_listed_files(folder, listed, result)


def _check_seal(raw: bytes, events: list[dict], result: Verification) -> None:
    last = events[-1] if events else None
    if last is None or last["kind"] != "run-finished":
        kind = last["kind"] if last else "none"
        result.problems.append(f"{EVENTS_FILE}: the last intact event is {kind!r}, "
                               f"not 'run-finished', yet {MANIFEST_FILE} exists")
        return
    data = last["data"]
    if data.get("manifest_sha256") != sha256_hex(raw):
        result.problems.append(f"{MANIFEST_FILE}: SHA-256 differs from the one in "
                               f"run-finished ({EVENTS_FILE} line {last['seq']})")
    if data.get("events") != last["seq"]:
        result.problems.append(f"{EVENTS_FILE} line {last['seq']}: run-finished "
                               f"counts {data.get('events')!r} events")


def _check_listed_files(folder: Path, listed: dict, result: Verification) -> None:
    on_disk = dict(_sealed_files(folder))
    for rel in sorted(set(listed) | set(on_disk)):
        path = on_disk.get(rel)
        if rel not in listed:
            result.problems.append(f"{rel}: not in {MANIFEST_FILE} (added after the "
                                   "run finished)")
        elif path is None:
            result.problems.append(f"{rel}: missing (listed in {MANIFEST_FILE})")
        elif path.is_symlink():
            result.problems.append(f"{rel}: a symbolic link, not a sealed file")
        elif sha256_hex(path.read_bytes()) != listed[rel].get("sha256"):
            result.problems.append(f"{rel}: SHA-256 differs from {MANIFEST_FILE} "
                                   "(changed after the run finished)")
    result.files = len(listed)


def main_verify(argv: list[str] | None = None) -> int:
    """``runbook audit verify RUN_DIR``: 0 when intact, 1 when not."""
    parser = argparse.ArgumentParser(
        prog="runbook audit verify",
        description="Check that a run folder is unchanged since it was written.")
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    args = parser.parse_args(argv)

    result = verify(args.run_dir)
    if not result.ok:
        for problem in result.problems:
            print(problem)
        return 1
    print(result)
    for note in result.notes:
        print(f"note: {note}")
    if result.finished and result.seal:
        print(f"seal: {result.seal}")
    return 0
