"""The client side of protocol 1: one long-lived PowerShell (or sandbox) child.

A `Session` starts the child, checks its hello, and then sends one JSON
request per call and waits for the one reply with the same id
(docs/internals.md, "Protocol 1"). The child's stdout is read by a thread
into a queue so that every wait has a deadline and stays interruptible; its
stderr is drained by another thread into a bounded tail that error messages
quote. When anything goes wrong in the conversation (timeout, broken line,
wrong id, Ctrl-C in a notebook) the child and its whole process group are
killed, so a late reply can never be taken for the answer to a later call;
the next call starts a fresh child and re-reads its hello.

Logging: one INFO line per call (command, outcome, duration) under this
module's logger; parameters only at DEBUG, with secret-looking keys masked;
the child's warnings and notices (stderr lines starting NOTICE_PREFIX) at
WARNING.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

try:
    import fcntl
except ImportError:     # Windows
    fcntl = None

from runbook import credentials

from .errors import (ChildStartError, PowerShellError, ProtocolError, SessionTimeout,
                     reply_error)
from .records import paused_gc

log = logging.getLogger(__name__)

PROTOCOL = 1
HELLO = "runbook-bridge"
BRIDGE_SCRIPT = Path(__file__).with_name("bridge.ps1")
# A stderr line with this prefix is meant for the person running the step (the
# device-code sign-in text): it is logged at WARNING so that it shows even
# where logging is not configured. All other stderr lines go to DEBUG.
NOTICE_PREFIX = "runbook-notice: "

_CLOSE_WAIT_S = 2.0     # a child that got EOF on stdin exits well within this
_EXIT_WAIT_S = 2.0      # after EOF on stdout, time allowed to learn the exit code
_REAP_WAIT_S = 5.0      # after SIGKILL
_STDERR_LINES = 200
_STDOUT_BUFFER = 1 << 20
_STDERR_LINE_CHARS = 2000
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)|secret|token|credential|pwd|key$",
                         re.IGNORECASE)
_POSIX = os.name == "posix"


@dataclass(frozen=True)
class Reply:
    """A successful reply; a reply with `ok: false` raises instead."""

    id: int
    output: list
    errors: list
    warnings: list
    duration_ms: float


@dataclass(frozen=True)
class Relayed:
    """A reply to hand on as it came (`Session.relay`), with what was read of it.

    `body` is the reply line from just after its id member to its newline
    (``"ok": true, "output": [...], ..."}\n``): the relay puts its own id in
    front. `ok`, `errors`, `warnings` and `duration_ms` are decoded; the
    output is not.
    """

    body: str
    ok: bool
    errors: list
    warnings: list
    duration_ms: float


def pwsh_command(pwsh: str = "pwsh") -> list[str]:
    """The argv that runs bridge.ps1 in PowerShell 7 with no profile or prompts."""
    return [pwsh, "-NoLogo", "-NoProfile", "-NonInteractive", "-File",
            str(BRIDGE_SCRIPT)]


def sandbox_command(state_path: str | os.PathLike) -> list[str]:
    """The argv of the simulated tenant backed by the state file `state_path`."""
    return [sys.executable, "-m", "runbook.sandbox", "--state", os.fspath(state_path)]


class _Deadline(Exception):
    """Internal: the wait for a line ran out of time."""


class _Undecodable:
    def __init__(self, error: UnicodeDecodeError):
        self.error = error


_EOF = object()


class _Child:
    """One running child program and the two threads that drain its pipes."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None,
                 cwd: str | os.PathLike | None):
        try:
            self.process = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # inherited, with a password file's content where bridge.ps1 reads it
                env=credentials.child_environment() if env is None else dict(env),
                cwd=cwd, **_group_options())
        except OSError as exc:
            raise ChildStartError(argv, exc) from exc
        self.pid = self.process.pid
        _widen_pipe(self.process.stdout)
        self._stdin = io.TextIOWrapper(self.process.stdin, encoding="utf-8",
                                       newline="\n", write_through=True)
        self.lines: queue.Queue = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._dead = False
        # Binary with a large buffer: a 1 MB reply arrives in a few reads, and
        # each line is decoded once, whole (strictly: a reply is UTF-8).
        stdout = io.BufferedReader(self.process.stdout.raw, _STDOUT_BUFFER)
        # stderr is for people: a stray byte there must not hide the rest.
        stderr = io.TextIOWrapper(self.process.stderr, encoding="utf-8",
                                  errors="replace")
        self._threads = [
            threading.Thread(target=_pump_stdout, args=(stdout, self.lines),
                             name=f"runbook-stdout-{self.pid}", daemon=True),
            threading.Thread(target=self._pump_stderr, args=(stderr,),
                             name=f"runbook-stderr-{self.pid}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode

    def stderr_tail(self) -> str:
        return "".join(self._stderr)

    def send(self, text: str) -> None:
        self._stdin.write(text)
        self._stdin.flush()

    def read_line(self, deadline: float):
        """The next stdout line, None at end of file; raises _Deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline
        try:
            item = self.lines.get(timeout=remaining)
        except queue.Empty:
            raise _Deadline from None
        if item is _EOF:
            self.lines.put(_EOF)    # stay at end of file for any later read
            return None
        return item

    def finish(self) -> None:
        """After end of file: give the child a moment to exit, then make sure."""
        try:
            self.process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def close(self, wait: float) -> None:
        """End the session politely (EOF on stdin), then make sure."""
        _close_quietly(self._stdin)
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            log.debug("child %d did not exit within %.1f s of EOF", self.pid, wait)
        self.kill()

    def kill(self) -> None:
        """Stop the child and everything it started; idempotent."""
        if self._dead:
            return
        self._dead = True
        _kill_group(self.process)
        try:
            self.process.wait(timeout=_REAP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("child %d survived SIGKILL for %.0f s", self.pid, _REAP_WAIT_S)
        # The stderr thread ends at EOF; waiting for it makes the tail complete.
        self._threads[1].join(timeout=1.0)
        for stream in (self._stdin, self.process.stdin):
            _close_quietly(stream)

    def _pump_stderr(self, stream: io.TextIOWrapper) -> None:
        try:
            for line in stream:
                self._stderr.append(line[:_STDERR_LINE_CHARS])
                if line.startswith(NOTICE_PREFIX):
                    log.warning("%s", line[len(NOTICE_PREFIX):].rstrip())
                else:
                    log.debug("child %d stderr: %s", self.pid, line.rstrip())
        except (OSError, ValueError):
            pass
        finally:
            _close_quietly(stream)


def _widen_pipe(stream) -> None:
    """Let the child write a large reply in one go (Linux: a 1 MB pipe, not
    64 kB), so it does not wait for the reader after every 64 kB."""
    option = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl else None
    if option is None:
        return
    try:
        fcntl.fcntl(stream.fileno(), option, _STDOUT_BUFFER)
    except OSError:     # above /proc/sys/fs/pipe-max-size: the default stays
        pass


def _pump_stdout(stream: io.BufferedReader, lines: queue.Queue) -> None:
    # readline() has no length limit: a 30 MB reply is one 30 MB line.
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        lines.put(_Undecodable(exc))
    except (OSError, ValueError):
        pass
    finally:
        _close_quietly(stream)
        lines.put(_EOF)


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except (OSError, ValueError):
        pass


def _group_options() -> dict:
    if _POSIX:
        # Its own session (and so process group): one killpg reaches grandchildren.
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _kill_group(process: subprocess.Popen) -> None:
    if _POSIX:
        # The group id is the child's pid, which stays reserved while the child
        # (or any member of its group) exists, so this cannot hit a stranger.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        # Windows has no process groups to kill at once; taskkill /T walks the
        # tree. Untested here (no Windows build machine).
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)],
                       capture_output=True, timeout=30, check=False)
    try:
        process.kill()
    except OSError:
        pass


def _redacted(value: Any) -> Any:
    """`value` with the values of secret-looking keys masked, for DEBUG logs."""
    if isinstance(value, Mapping):
        return {k: "***" if _SECRET_KEY.search(str(k)) else _redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


class Session:
    """A conversation with one child program speaking protocol 1.

    `argv` is usually `pwsh_command()` or `sandbox_command(state)`; `env`, when
    given, is the child's whole environment. `timeout` (seconds) bounds the
    hello and every call unless a call gives its own. `on_start(session)`, if
    given, runs after every hello, the first and those after a restart, so a
    caller can reconnect a fresh child (a restarted child knows nothing).

    The child never outlives the session: `close()`, the context manager, a
    `weakref.finalize` (which also runs at interpreter exit) and the error
    paths all kill its process group.

    Raises ChildStartError or ProtocolError (bad or missing hello) or
    SessionTimeout (no hello in time) from the constructor.
    """

    def __init__(self, argv: Sequence[str], timeout: float = 60.0,
                 env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, *,
                 on_start: Callable[["Session"], None] | None = None):
        self.argv = list(argv)
        self.timeout = float(timeout)
        self.env = env
        self.cwd = cwd
        self.on_start = on_start
        self.hello: dict = {}
        self.starts = 0
        self._child: _Child | None = None
        self._finalizer: weakref.finalize | None = None
        self._next_id = 1
        self._closed = False
        self._lock = threading.RLock()
        self._start()

    # -- what the child told us ------------------------------------------

    @property
    def host(self) -> str:
        return str(self.hello.get("host", ""))

    @property
    def versions(self) -> dict:
        return dict(self.hello.get("versions") or {})

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a kill and a restart)."""
        return self._child.pid if self._child else None

    # -- calls ----------------------------------------------------------

    def invoke(self, command: str, **parameters: Any) -> list[dict]:
        """Run a read command and return its output records."""
        return self.call(command, parameters).output

    def call(self, command: str, parameters: Mapping[str, Any] | None = None, *,
             confirmed: bool = False, timeout: float | None = None) -> Reply:
        """Send one request and return its reply.

        Raises CommandFailed (ObjectNotFound for a missing identity) or
        CommandRefused for a reply with `ok: false`; SessionTimeout after
        `timeout` seconds; ProtocolError when the child breaks the protocol.
        After the last two the child is gone and the next call starts another.
        TypeError for parameters that are not JSON data (nothing is sent).
        """
        return self._request(command, parameters, confirmed, timeout, relayed=False)

    def relay(self, command: str, parameters: Mapping[str, Any] | None = None, *,
              confirmed: bool = False, timeout: float | None = None) -> Relayed:
        """One call whose reply is handed on undecoded: the session broker's.

        A large reply is then decoded once, by the one who uses it, not also
        here. What keeps the conversation in step is checked as in `call`:
        one whole line, beginning with this request's id. Both children
        write a reply's members in protocol order (id, ok, output, errors,
        warnings, duration_ms), so the id and ok are read from the line's
        head and the rest but the output from its tail; a line in any other
        order is decoded whole and checked as `call` checks it. A reply with
        `ok: false` is returned, not raised. Raises SessionTimeout,
        ProtocolError or TypeError as `call` does.
        """
        return self._request(command, parameters, confirmed, timeout, relayed=True)

    def _request(self, command: str, parameters: Mapping[str, Any] | None,
                 confirmed: bool, timeout: float | None, *, relayed: bool):
        limit = self.timeout if timeout is None else float(timeout)
        with self._lock:
            if self._closed:
                raise PowerShellError(f"{command}: the session is closed")
            child = self._running_child()
            request_id = self._next_id
            text = _request_line(request_id, command, parameters, confirmed)
            self._next_id += 1
            log.debug("%s #%d parameters %s confirmed=%s%s", command, request_id,
                      _redacted(dict(parameters or {})), bool(confirmed),
                      " (relayed)" if relayed else "")
            return self._conversation(child, request_id, command, text, limit,
                                      relayed)

    def _conversation(self, child: _Child, request_id: int, command: str,
                      text: str, limit: float, relayed: bool) -> Reply | Relayed:
        started = time.monotonic()
        outcome = "interrupted"
        try:
            if relayed:
                result = self._relay_exchange(child, request_id, command, text, limit)
                ok = result.ok
            else:
                message = self._exchange(child, request_id, command, text, limit)
                result = _reply(message, request_id, started)
                ok = message["ok"] is True
            for warning in result.warnings:
                log.warning("%s: %s", command, warning)
            if not ok and not relayed:
                error = reply_error(command, result.errors, result.warnings,
                                    result.output)
                outcome = f"{error.verb} ({error.error_id or 'no error id'})"
                raise error
            outcome = "ok" if ok else "failed"
            return result
        except SessionTimeout:
            outcome = "timed out"
            raise
        except ProtocolError:
            outcome = "protocol error"
            self._discard_child()
            raise
        except PowerShellError:
            raise
        except BaseException:
            # KeyboardInterrupt from a notebook (or anything unforeseen) while
            # the child may still be working: it must not live on unobserved.
            self._discard_child()
            raise
        finally:
            log.info("%s %s in %.1f ms%s", command, outcome,
                     (time.monotonic() - started) * 1000,
                     " (relayed)" if relayed else "")

    def _relay_exchange(self, child: _Child, request_id: int, command: str,
                        text: str, limit: float) -> Relayed:
        line = self._send_and_read(child, command, text, limit)
        if isinstance(line, str) and line.endswith("\n"):
            fast = _split_reply(line, request_id)
            if fast is not None:
                return fast
        message = self._checked(child, line, request_id, command)
        body = json.dumps({k: v for k, v in message.items() if k != "id"},
                          ensure_ascii=False, allow_nan=False)
        reply = _reply(message, request_id, time.monotonic())
        return Relayed(body=body[1:] + "\n", ok=message["ok"],
                       errors=reply.errors, warnings=reply.warnings,
                       duration_ms=reply.duration_ms)

    def _exchange(self, child: _Child, request_id: int, command: str, text: str,
                  limit: float) -> dict:
        line = self._send_and_read(child, command, text, limit)
        return self._checked(child, line, request_id, command)

    def _send_and_read(self, child: _Child, command: str, text: str, limit: float):
        deadline = time.monotonic() + limit
        try:
            child.send(text)
        except (OSError, ValueError) as exc:
            raise self._broken(child, "the child is gone; could not send the request",
                               command=command, ended=True) from exc
        try:
            return child.read_line(deadline)
        except _Deadline:
            tail = child.stderr_tail()
            self._discard_child()
            raise SessionTimeout(command, limit, stderr_tail=tail) from None

    def _checked(self, child: _Child, line, request_id: int, command: str) -> dict:
        """The reply `line` decoded, or the ProtocolError it deserves."""
        message = self._decode(child, line, command)
        if not isinstance(message, dict) or "id" not in message:
            raise self._broken(child, "a line that is not a reply", line=line,
                               command=command)
        if isinstance(message["id"], bool) or message["id"] != request_id:
            raise self._broken(
                child, f"reply for id {message['id']!r} while waiting for "
                f"{request_id}", line=line, command=command)
        if not _well_formed(message):
            raise self._broken(child, "a reply whose ok, output, errors or warnings "
                               "has the wrong type", line=line, command=command)
        return message

    # -- lifecycle ------------------------------------------------------

    def close(self) -> None:
        """Close stdin, give the child a moment to exit, then kill its group."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
            if child is not None:
                child.close(_CLOSE_WAIT_S)
                log.debug("child %d closed, exit code %s", child.pid, child.exit_code)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid {self.pid}"
        return f"<Session {self.host or '?'} {state}>"

    def _running_child(self) -> _Child:
        if self._child is None:
            log.debug("starting a fresh child for %s", self.argv[0])
            self._start()
        assert self._child is not None
        return self._child

    def _start(self) -> None:
        child = _Child(self.argv, self.env, self.cwd)
        self._child = child
        # Holds the child, not the session, so a forgotten session is collectable.
        self._finalizer = weakref.finalize(self, child.kill)
        try:
            self.hello = self._read_hello(child)
        except BaseException:
            self._discard_child()
            raise
        self.starts += 1
        log.debug("child %d: %s host %r, versions %s", child.pid, HELLO,
                  self.host, self.versions)
        if self.on_start is not None:
            self.on_start(self)

    def _read_hello(self, child: _Child) -> dict:
        try:
            line = child.read_line(time.monotonic() + self.timeout)
        except _Deadline:
            raise SessionTimeout("hello", self.timeout,
                                 stderr_tail=child.stderr_tail()) from None
        hello = self._decode(child, line, None, waiting_for="its hello")
        if not isinstance(hello, dict) or hello.get("hello") != HELLO:
            raise self._broken(child, f"the first line is not a {HELLO} hello",
                               line=line)
        protocol = hello.get("protocol")
        if protocol != PROTOCOL or isinstance(protocol, bool):
            raise self._broken(child, f"the child speaks protocol {protocol!r}, "
                               f"this client speaks {PROTOCOL}", line=line)
        if not isinstance(hello.get("versions"), dict) or not isinstance(
                hello.get("host"), str):
            raise self._broken(child, "the hello lacks host or versions", line=line)
        return hello

    def _decode(self, child: _Child, line, command: str | None, *,
                waiting_for: str = "the reply"):
        if line is None:
            raise self._broken(child, f"the child exited before {waiting_for}",
                               command=command, ended=True)
        if isinstance(line, _Undecodable):
            raise self._broken(child, "the child wrote bytes that are not UTF-8",
                               command=command) from line.error
        if not line.endswith("\n"):
            raise self._broken(child, f"the child exited in the middle of "
                               f"{waiting_for}", line=line, command=command,
                               ended=True)
        try:
            with paused_gc():
                return json.loads(line)
        except ValueError as exc:   # not JSON, or a number too long to read
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise self._broken(child, f"a line that is not JSON ({reason})",
                               line=line.rstrip("\n"), command=command) from exc

    def _broken(self, child: _Child, reason: str, *, line: str | None = None,
                command: str | None = None, ended: bool = False) -> ProtocolError:
        """Stop the child and describe what it did; the caller raises."""
        if ended:
            child.finish()
        self._discard_child()
        return ProtocolError(reason, line=line, exit_code=child.exit_code,
                             stderr_tail=child.stderr_tail(), command=command)

    def _discard_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None


def _request_line(request_id: int, command: str,
                  parameters: Mapping[str, Any] | None, confirmed: bool) -> str:
    request = {"id": request_id, "command": command,
               "parameters": dict(parameters or {}), "confirmed": bool(confirmed)}
    try:
        # ASCII on the wire: the child's console input encoding cannot matter.
        return json.dumps(request, ensure_ascii=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{command}: parameters must be JSON data "
                        f"(str, number, bool, None, list, dict): {exc}") from exc


# The head of a reply in protocol order; "output" is where the relay stops reading.
_REPLY_HEAD = re.compile(r'\{\s*"id"\s*:\s*(0|[1-9]\d{0,17})\s*,'
                         r'(\s*"ok"\s*:\s*(true|false)\s*,\s*"output"\s*:)')
_TAIL_KEY = '"errors"'


def _split_reply(line: str, request_id: int) -> Relayed | None:
    """`line` read without decoding its output, or None to decode it whole.

    The head must be this request's id and ok, then the output; the tail,
    from the last `"errors"` on, must be exactly the rest of one object
    holding errors, warnings and duration_ms. A key or string "errors" met
    inside the output or later leaves something else, which fails to
    decode; and JSON escapes every quote inside a string, so no text within
    a value can pose as the key.
    """
    head = _REPLY_HEAD.match(line)
    if head is None or int(head.group(1)) != request_id:
        return None
    start = line.rfind(_TAIL_KEY)
    if start < head.end():
        return None
    try:
        tail = json.loads("{" + line[start:])
    except ValueError:
        return None
    if set(tail) - {"errors", "warnings", "duration_ms"} or not _well_formed(
            {"ok": True, "output": [], **tail}):
        return None
    message = {"ok": head.group(3) == "true", "output": [], **tail}
    reply = _reply(message, request_id, time.monotonic())
    return Relayed(body=line[head.start(2):], ok=message["ok"], errors=reply.errors,
                   warnings=reply.warnings, duration_ms=reply.duration_ms)


def _well_formed(message: dict) -> bool:
    return (isinstance(message.get("ok"), bool)
            and isinstance(message.get("output"), list)
            and isinstance(message.get("errors", []), list)
            and isinstance(message.get("warnings", []), list))


def reply_duration(message: dict, otherwise: float) -> float:
    """The child's own `duration_ms`, or `otherwise` where it gave no number."""
    duration = message.get("duration_ms")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool):
        return otherwise
    return float(duration)


def _reply(message: dict, request_id: int, started: float) -> Reply:
    duration = reply_duration(message, (time.monotonic() - started) * 1000)
    errors = message.get("errors") or []
    return Reply(id=request_id, output=message["output"],
                 errors=[e if isinstance(e, dict) else {"message": str(e)}
                         for e in errors],
                 warnings=[str(w) for w in message.get("warnings") or []],
                 duration_ms=duration)
