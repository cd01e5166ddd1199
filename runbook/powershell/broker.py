"""One PowerShell session shared by the notebooks of one run, over a Unix socket.

A tenant run's five notebooks each run in their own kernel, but connecting to
Exchange Online costs seconds (and, with device login, a person), so the
chain opens one `Session` per run and serves it with a `SessionBroker`. Each
kernel talks to it through a `RemoteSession`, which offers the `Session`
interface (`call`, `invoke`, `hello`, `host`, `versions`, `close`); a
notebook run alone opens its own `Session` instead. The chain names the
socket to its kernels in the environment variable `SOCKET_ENV`.

Who may connect. The socket lives in a fresh directory of mode 0700 and is
itself 0600, so only the run's user can reach it; the broker then reads the
peer's credentials (SO_PEERCRED) and refuses any other uid, in case the
permissions were loosened. Where SO_PEERCRED is missing (not Linux) only the
permissions guard the socket.

The conversation mirrors protocol 1 (docs/internals.md), one JSON object a
line. The broker's first line on a connection::

    {"hello": "runbook-broker", "protocol": 1, "child": <the child's hello>,
     "timeout": 300.0}

or, for a refused peer, ``{"refused": "<why>"}`` before it hangs up. Requests
are protocol-1 requests with an optional ``timeout`` (seconds). A reply that
came from the child is passed on as it came, behind the client's own id
(``ok``, ``output``, ``errors``, ``warnings``, ``duration_ms``), so
`reply_error` turns it into the same CommandFailed / ObjectNotFound /
CommandRefused on this side. The broker does not decode the output
(`Session.relay`): a 1 MB reply is decoded once, in the kernel that asked
for it, which also checks its shape. An output that is not JSON is
therefore a ProtocolError for that caller only; the line was whole and
carried its id, so the shared child stays in step and serves on. An error the
session raised without a reply (SessionTimeout, ProtocolError,
ChildStartError) travels as ``{"ok": false, "raised": {"class", "args",
"attributes"}}`` and is rebuilt as the same class. A reply also carries the
child's new hello when the session restarted its child since the last
reply (a restarted sandbox serves DNS on a new port).

One request runs at a time, in arrival order (a lock): the child is one
PowerShell runspace. Known shortcoming: when a client goes away in the middle
of a call (Ctrl-C in a notebook) the command still runs to its end or its
timeout in the shared child, and its reply is dropped; a `Session` would kill
its child instead, which here would cost the other notebooks their
connection.

Errors: `BrokerUnavailable` (a `PowerShellError`) when no broker answers at
the path or it refuses this process; everything else is the tree of
`runbook.powershell.errors`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from . import errors as errors_mod
from .errors import PowerShellError, ProtocolError
from .errors import SessionTimeout, reply_error
from .records import paused_gc
from .session import Relayed, Reply, Session, _well_formed, reply_duration

log = logging.getLogger(__name__)

BROKER_HELLO = "runbook-broker"
PROTOCOL = 1
SOCKET_NAME = "session.sock"
# The chain names its broker's socket to the kernels it starts in this
# environment variable, not in a notebook parameter: parameters are recorded
# in run.json and reused by a resume, when the socket is long gone.
SOCKET_ENV = "RUNBOOK_SESSION_SOCKET"

_ACCEPT_TICK_S = 0.05     # how often the accept loop looks at the stop flag
_CONNECT_TIMEOUT_S = 10.0  # connect and read the broker's hello
_REPLY_GRACE_S = 10.0     # on top of the call's own limit, for the lock and a restart
_MAX_PATH = 100           # sun_path holds 108 bytes on Linux, 104 on macOS
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_HUNG_UP = "the session broker closed the connection"
_READ_BUFFER = 1 << 20    # a large reply arrives in a few reads

# The classes a "raised" record may name; anything else arrives as the base.
_RAISABLE = {cls.__name__: cls for cls in (
    errors_mod.PowerShellError, errors_mod.ChildStartError, errors_mod.ProtocolError,
    errors_mod.SessionTimeout)}


class BrokerUnavailable(PowerShellError):
    """No session broker answers at `path`, or it refused this process.

    `reason` says which: the socket is missing, the connection was refused,
    permission denied, or the broker's own refusal text.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"no shared PowerShell session at {self.path}: {reason}")


# -- the server side ---------------------------------------------------------


@contextmanager
def serve(argv: Sequence[str], *, timeout: float,
          connect: Callable[[Session], None] | None = None,
          path: str | os.PathLike | None = None) -> Iterator["SessionBroker"]:
    """A run's shared session: start the child, connect, serve; close at the end.

    `connect(session)` runs once now and again after every restart of the
    child (a restarted child knows no connection). Whatever fails on the way
    in closes the child again and is raised: the caller decides whether the
    steps then open sessions of their own.
    """
    session = Session(argv, timeout=timeout)
    try:
        if connect is not None:
            connect(session)
            session.on_start = connect
        with SessionBroker(session, path) as broker:
            yield broker
    finally:
        session.close()


class SessionBroker:
    """Serve one existing `Session` on a private Unix domain socket.

    `path` is the socket to create; by default ``session.sock`` in a fresh
    0700 temporary directory, which `close()` removes again. A given path's
    directory is created 0700 when missing and must otherwise belong to this
    user and be closed to everybody else. The broker does not own the
    session: the caller closes it after the broker.
    """

    def __init__(self, session, path: str | os.PathLike | None = None):
        self.session = session
        self._own_dir = path is None
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="runbook-session-")) / SOCKET_NAME
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        try:
            self._listener = self._listen()
        except BaseException:
            if self._own_dir:
                shutil.rmtree(self.path.parent, ignore_errors=True)
            raise
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"runbook-broker-{self.path.name}")
        self._thread.start()
        log.debug("serving session %r on %s", session, self.path)

    def __enter__(self) -> "SessionBroker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._stop.is_set() else "serving"
        return f"<SessionBroker {self.path} {state}>"

    def close(self) -> None:
        """Stop accepting, hang up on every client, remove the socket."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5 * _ACCEPT_TICK_S + 1)
        self._listener.close()
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            _hang_up(client)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self._own_dir:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    # -- setting up --------------------------------------------------------

    def _listen(self) -> socket.socket:
        _private_dir(self.path.parent)
        if len(os.fsencode(self.path)) > _MAX_PATH:
            raise ValueError(f"socket path {self.path} is longer than {_MAX_PATH} "
                             "bytes; a Unix socket cannot be bound there")
        if self.path.exists() or self.path.is_symlink():
            raise FileExistsError(f"{self.path} exists; another broker may serve it")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(os.fspath(self.path))
            # Before listen(): nobody can connect during the umask's moment.
            os.chmod(self.path, 0o600)
            listener.listen(8)
            listener.settimeout(_ACCEPT_TICK_S)
        except BaseException:
            listener.close()
            raise
        return listener

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True,
                             name="runbook-broker-client").start()

    # -- one client ----------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        with self._clients_lock:
            self._clients.add(client)
        try:
            refusal = _peer_refusal(client)
            if refusal:
                log.warning("refused a session client on %s: %s", self.path, refusal)
                _send(client, {"refused": refusal})
                return
            self._converse(client)
        except OSError as exc:  # the client went away; nothing to tell anyone
            log.debug("session client on %s gone: %s", self.path, exc)
        finally:
            with self._clients_lock:
                self._clients.discard(client)
            _hang_up(client)

    def _converse(self, client: socket.socket) -> None:
        _send(client, {"hello": BROKER_HELLO, "protocol": PROTOCOL,
                       "child": self.session.hello, "timeout": self.session.timeout})
        starts = self.session.starts
        reader = client.makefile("rb")
        for line in reader:
            if self._stop.is_set():
                return
            request_id, answer = self._answer(line)
            head = {"id": request_id}
            if self.session.starts != starts:
                starts = self.session.starts
                head["hello"] = self.session.hello
            if isinstance(answer, dict):
                _send(client, {**head, **answer})
            else:   # the child's reply line as it came, after our id (and hello)
                text = json.dumps(head, ensure_ascii=True, default=repr)[:-1] + ","
                client.sendall(text.encode("ascii") + answer.body.encode("utf-8"))

    def _answer(self, line: bytes) -> tuple[Any, dict | Relayed]:
        """The request's id, and the child's reply or what the session raised."""
        try:
            request = json.loads(line)
            request_id = request["id"]
            command = str(request["command"])
        except (ValueError, KeyError, TypeError):
            error = ProtocolError("a line that is not a request",
                                  line=line.decode("utf-8", "replace")[:200])
            return None, {"ok": False, "raised": _raised(error)}
        try:
            with self._lock:
                return request_id, self.session.relay(
                    command, request.get("parameters") or {},
                    confirmed=bool(request.get("confirmed")),
                    timeout=request.get("timeout"))
        except Exception as exc:  # every failure without a reply travels as its class
            return request_id, {"ok": False, "raised": _raised(exc)}


def _private_dir(folder: Path) -> None:
    """Create `folder` 0700, or make sure an existing one is ours and closed."""
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{folder} is not a directory")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to uid {info.st_uid}, not to this "
                              f"user ({os.getuid()}); the session socket stays out")
    if info.st_mode & 0o077:
        raise PermissionError(f"{folder} is open to others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}); the session socket "
                              "needs a directory only its user can enter (0700)")


def _peer_refusal(client: socket.socket) -> str:
    """Why this peer may not use the session; empty when it may."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return ""
    raw = client.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
    pid, uid, _gid = _PEERCRED.unpack(raw)
    if uid != os.getuid():
        return f"process {pid} runs as uid {uid}; only uid {os.getuid()} may connect"
    return ""


def _raised(error: BaseException) -> dict:
    name = type(error).__name__ if type(error).__name__ in _RAISABLE else (
        "PowerShellError")
    attributes = {k: _plain(v) for k, v in vars(error).items()}
    return {"class": name, "message": str(error),
            "args": [_plain(a) for a in error.args], "attributes": attributes}


def _plain(value: Any) -> Any:
    """`value` as JSON data; an OSError (ChildStartError.os_error) as its parts."""
    if isinstance(value, OSError):
        return {"errno": value.errno, "strerror": value.strerror or str(value)}
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _send(client: socket.socket, message: dict) -> None:
    data = json.dumps(message, ensure_ascii=True, allow_nan=False, default=repr)
    client.sendall(data.encode("ascii") + b"\n")


def _hang_up(client: socket.socket) -> None:
    try:
        client.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    client.close()


# -- the client side ---------------------------------------------------------


class RemoteSession:
    """The shared session of a run, reached through its broker's socket.

    Behaves like `Session`: `call` raises the same exceptions for the same
    replies, and `close()` ends only this connection, never the shared child.
    Raises BrokerUnavailable from the constructor when nobody serves `path`.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None):
        self.path = os.fspath(path)
        self.hello: dict = {}
        self.timeout = 0.0
        self._given_timeout = timeout
        self._socket: socket.socket | None = None
        self._reader = None
        self._next_id = 1
        self._closed = False
        self._lock = threading.RLock()
        self._connect()

    @property
    def host(self) -> str:
        return str(self.hello.get("host", ""))

    @property
    def versions(self) -> dict:
        return dict(self.hello.get("versions") or {})

    @property
    def pid(self) -> int | None:
        """The shared child's process id as its hello gave it, if it did."""
        return self.hello.get("pid")

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.path
        return f"<RemoteSession {self.host or '?'} {state}>"

    def invoke(self, command: str, **parameters: Any) -> list[dict]:
        """Run a read command and return its output records."""
        return self.call(command, parameters).output

    def call(self, command: str, parameters: Mapping[str, Any] | None = None, *,
             confirmed: bool = False, timeout: float | None = None) -> Reply:
        """Send one request through the broker; same contract as `Session.call`."""
        with self._lock:
            if self._closed:
                raise PowerShellError(f"{command}: the session is closed")
            request_id = self._next_id
            self._next_id += 1
            text = _request_text(request_id, command, parameters, confirmed, timeout)
            limit = self.timeout if timeout is None else float(timeout)
            if self._socket is None:
                self._connect()
            message = self._exchange(request_id, command, text, limit)
        return _result(message, request_id, command)

    def close(self) -> None:
        """End this connection; the shared session goes on serving the others."""
        with self._lock:
            self._closed = True
            self._disconnect()

    # -- the connection ----------------------------------------------------

    def _connect(self) -> None:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(_CONNECT_TIMEOUT_S)
        try:
            client.connect(self.path)
        except OSError as exc:
            client.close()
            raise BrokerUnavailable(self.path, exc.strerror or str(exc)) from exc
        self._socket, self._reader = client, client.makefile("rb", _READ_BUFFER)
        first = self._read_line(time.monotonic() + _CONNECT_TIMEOUT_S, "hello")
        if first is None or "refused" in first:
            self._disconnect()
            why = first["refused"] if first else "the broker hung up before its hello"
            raise BrokerUnavailable(self.path, str(why))
        if first.get("hello") != BROKER_HELLO or first.get("protocol") != PROTOCOL:
            self._disconnect()
            raise BrokerUnavailable(self.path, f"not a {BROKER_HELLO} of protocol "
                                    f"{PROTOCOL}: {str(first)[:200]}")
        self.hello = dict(first.get("child") or {})
        self.timeout = float(self._given_timeout or first.get("timeout") or 60.0)

    def _disconnect(self) -> None:
        client, self._socket = self._socket, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if client is not None:
            _hang_up(client)

    def _exchange(self, request_id: int, command: str, text: str,
                  limit: float) -> dict:
        deadline = time.monotonic() + limit + _REPLY_GRACE_S
        try:
            self._send(text, command)
            message = self._read_line(deadline, command)
        except BaseException:
            # A late reply must never answer a later call: drop the connection.
            self._disconnect()
            raise
        if message is None:
            self._disconnect()
            raise ProtocolError(_HUNG_UP, command=command)
        if message.get("id") != request_id:
            self._disconnect()
            raise ProtocolError(f"reply for id {message.get('id')!r} while waiting "
                                f"for {request_id}", command=command)
        if isinstance(message.get("hello"), dict):
            self.hello = message["hello"]
        return message

    def _send(self, text: str, command: str) -> None:
        try:
            self._socket.sendall(text.encode("ascii"))
        except OSError as exc:
            raise ProtocolError(_HUNG_UP, command=command) from exc

    def _read_line(self, deadline: float, waiting_for: str) -> dict | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SessionTimeout(waiting_for, 0.0)
        self._socket.settimeout(remaining)
        try:
            line = self._reader.readline()
        except socket.timeout:
            raise SessionTimeout(waiting_for, round(remaining, 1)) from None
        except OSError as exc:
            raise ProtocolError(f"the session broker connection failed: {exc}",
                                command=waiting_for) from exc
        if not line:
            return None
        try:
            with paused_gc():
                return json.loads(line)
        except ValueError as exc:
            raise ProtocolError("the session broker wrote a line that is not JSON",
                                line=line.decode("utf-8", "replace")[:200],
                                command=waiting_for) from exc


def _request_text(request_id: int, command: str, parameters: Mapping | None,
                  confirmed: bool, timeout: float | None) -> str:
    request: dict[str, Any] = {"id": request_id, "command": command,
                               "parameters": dict(parameters or {}),
                               "confirmed": bool(confirmed)}
    if timeout is not None:
        request["timeout"] = float(timeout)
    try:
        return json.dumps(request, ensure_ascii=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{command}: parameters must be JSON data "
                        f"(str, number, bool, None, list, dict): {exc}") from exc


def _result(message: dict, request_id: int, command: str) -> Reply:
    if isinstance(message.get("raised"), dict):
        raise _rebuild(message["raised"])
    # The broker hands the child's reply on undecoded: this is where its shape
    # is checked.
    if not _well_formed(message):
        raise ProtocolError("a reply whose ok, output, errors or warnings has the "
                            "wrong type", line=str(message)[:200], command=command)
    output = message.get("output") or []
    errors = message.get("errors") or []
    warnings = [str(w) for w in message.get("warnings") or []]
    # As Session does: the tenant's warnings show where the call was made
    # (in the notebook's output), not only in the broker's log.
    for warning in warnings:
        log.warning("%s: %s", command, warning)
    if message.get("ok") is not True:
        raise reply_error(command, errors, warnings, output)
    return Reply(id=request_id, output=output, errors=errors, warnings=warnings,
                 duration_ms=reply_duration(message, 0.0))


def _rebuild(raised: dict) -> PowerShellError:
    """The exception the session raised on the broker's side, as the same class."""
    cls = _RAISABLE.get(str(raised.get("class")), PowerShellError)
    error = cls.__new__(cls)
    Exception.__init__(error, *(raised.get("args") or [raised.get("message", "")]))
    attributes = dict(raised.get("attributes") or {})
    if cls is errors_mod.ChildStartError and isinstance(attributes.get("os_error"),
                                                        dict):
        found = attributes["os_error"]
        attributes["os_error"] = OSError(found.get("errno"), found.get("strerror"))
    error.__dict__.update(attributes)
    return error
