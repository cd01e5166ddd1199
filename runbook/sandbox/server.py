"""The sandbox child program: protocol 1 over stdin/stdout for one tenant.

`python -m runbook.sandbox --state FILE` answers exactly as bridge.ps1 does on
a real tenant (docs/internals.md "Protocol 1"): a hello line, then one JSON
response per request line, until stdin closes. One child owns the state file
while it runs; it loads the file at start and saves it atomically after every
request that changed the tenant, so the next child (the next notebook) carries
on where this one stopped. The tenant's DNS is served on 127.0.0.1 for the
life of the child and announced in the hello.

stdout carries protocol lines only: Python's own `print` and logging go to
stderr, so a stray diagnostic can never corrupt a response.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import time
import traceback
from typing import BinaryIO, Callable

from ..powershell import commands
from . import state as state_file
from .registry import CmdletError, lookup
from .tenant import Tenant

log = logging.getLogger(__name__)

# A file named here gets one JSON line per request from every sandbox child
# (pid, command, ok; never parameters): how tests see which child received
# what, across the processes of a run. Unset, nothing is written.
CALL_LOG_ENV = "RUNBOOK_SANDBOX_CALL_LOG"
VERSIONS = {"pwsh": "7.5.4", "edition": "Core", "ExchangeOnlineManagement": "3.9.0"}
_ALLOWED = {name.lower(): name for name in commands.ALLOWED}
_MUTATING = {name.lower() for name in commands.MUTATING}
_IMPORTABLE = {name.lower() for name in commands.IMPORTABLE_MODULES}
# The cmdlet modules register themselves with the registry on import; the
# module engineer's simulated seppmail365cloud and gallery come with theirs.
_CMDLET_MODULES = ("runbook.sandbox.exo", "runbook.sandbox.trace",
                   "runbook.sandbox.module", "runbook.sandbox.gallery")


def load_cmdlets() -> list[str]:
    """Import every cmdlet module that exists; returns the ones loaded."""
    loaded = []
    for name in _CMDLET_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.warning("sandbox cmdlet module %s is not available", name)
            continue
        loaded.append(name)
    return loaded


def version_key(version: str) -> tuple:
    """Order module versions: 1.3.0-preview1 < 1.3.0-preview2 < 1.3.0 < 1.3.1."""
    core, _, pre = str(version).partition("-")
    numbers = tuple(int(p) if p.isdigit() else 0 for p in core.split("."))
    natural = tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", pre) if p)
    return numbers + (0,) * (4 - len(numbers)), pre == "", natural


def installed_versions(state: dict) -> list[str]:
    """seppmail365cloud versions of state["installed_modules"], newest first."""
    versions = {m["Version"] for m in state.get("installed_modules") or []
                if str(m.get("Name", "")).lower() == "seppmail365cloud"}
    return sorted(versions, key=version_key, reverse=True)


def trace_timing(state: dict) -> dict:
    """How the simulated message trace runs in time (step 5 waits by it, as it
    would wait minutes for a real tenant's trace)."""
    from runbook.sandbox.trace import hop_seconds

    traffic = state.get("traffic") or {}
    return {"hop_s": hop_seconds(state),
            "latency_s": float(traffic.get("trace_latency_s") or 0.0)}


def hello(state: dict, dns_address: tuple[str, int] | None,
          openid_url: str | None = None) -> dict:
    versions = dict(VERSIONS, seppmail365cloud=installed_versions(state))
    line = {"hello": "runbook-bridge", "protocol": 1, "host": "sandbox",
            "versions": versions, "trace": trace_timing(state)}
    if dns_address is not None:
        line["dns"] = f"{dns_address[0]}:{dns_address[1]}"
    if openid_url is not None:
        line["openid"] = openid_url
    return line


def _refusal(message: str, error_id: str, target) -> list[dict]:
    return [{"message": message, "category": "PermissionDenied",
             "error_id": error_id, "target": target}]


def _gate(command, parameters, confirmed) -> tuple[str | None, list[dict]]:
    """The allow-list and confirmation checks; nothing runs when they refuse."""
    if not isinstance(command, str) or command.lower() not in _ALLOWED:
        return None, _refusal(f"The command '{command}' is not on the runbook's"
                              " allow-list.", "RunbookCommandNotAllowed", command)
    name = _ALLOWED[command.lower()]
    if name.lower() in _MUTATING and confirmed is not True:
        return None, _refusal(f"'{name}' changes the tenant and needs a confirmed"
                              " request.", "RunbookConfirmationRequired", name)
    if name == "Import-Module":
        wanted = next((v for k, v in parameters.items() if k.lower() == "name"), None)
        modules = wanted if isinstance(wanted, list) else [wanted]
        refused = [m for m in modules if str(m).lower() not in _IMPORTABLE]
        if refused:
            return None, _refusal(f"Import-Module may load only"
                                  f" {', '.join(sorted(commands.IMPORTABLE_MODULES))};"
                                  f" refused {refused[0]!r}.",
                                  "RunbookCommandNotAllowed", str(refused[0]))
    return name, []


def _has_confirm(fn, tenant: Tenant) -> bool:
    """Whether the cmdlet takes -Confirm (it supports ShouldProcess).

    A registered function may say so with a `should_process` attribute, a
    bool or a callable of the tenant (a module function's answer depends on
    the imported version). Without one, the command is taken to have it:
    every mutating command on the allow-list is a ShouldProcess cmdlet.
    """
    flag = getattr(fn, "should_process", True)
    return bool(flag(tenant) if callable(flag) else flag)


def _run(tenant: Tenant, name: str, parameters: dict,
         confirmed: bool) -> tuple[list, list[dict]]:
    fn = lookup(name)
    if fn is None:
        return [], [{"message": f"The sandbox does not implement '{name}'.",
                     "category": "NotImplemented", "error_id": "SandboxNotImplemented",
                     "target": name}]
    parameters = dict(parameters)
    given = {str(k).lower() for k in parameters}
    if confirmed and name.lower() in _MUTATING and "confirm" not in given \
            and _has_confirm(fn, tenant):
        # As bridge.ps1 does: a confirmed request runs with -Confirm:$false.
        parameters["Confirm"] = False
    try:
        output = fn(tenant, parameters)
    except CmdletError as exc:
        return [], [exc.record()]
    except Exception as exc:  # a sandbox bug must not kill the session
        log.error("sandbox fault in %s:\n%s", name, traceback.format_exc())
        return [], [{"message": f"Sandbox internal error in {name}: {exc!r}",
                     "category": "NotSpecified", "error_id": "SandboxInternalError",
                     "target": name}]
    return list(output or []), []


def answer(tenant: Tenant, request) -> dict:
    """One response for one decoded request (no I/O, no saving)."""
    started = time.perf_counter()
    rid = request.get("id") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(
            request.get("parameters") or {}, dict):
        output, errors = [], [{"message": "A request is a JSON object with id,"
                               " command and parameters (an object).",
                               "category": "InvalidArgument",
                               "error_id": "RunbookBadRequest", "target": None}]
    else:
        parameters = request.get("parameters") or {}
        confirmed = request.get("confirmed", False) is True
        name, errors = _gate(request.get("command"), parameters, confirmed)
        output = []
        if name is not None:
            output, errors = _run(tenant, name, parameters, confirmed)
    warnings = tenant.take_warnings()
    duration = round((time.perf_counter() - started) * 1000, 3)
    log.info("%s ok=%s in %.1f ms", request.get("command") if isinstance(
        request, dict) else None, not errors, duration)
    return {"id": rid, "ok": not errors, "output": output, "errors": errors,
            "warnings": warnings, "duration_ms": duration}


def _decode(line: bytes):
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _json(value) -> str:
    # Compact, as bridge.ps1's ConvertTo-Json -Compress writes it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _write(out: BinaryIO, message: dict, texts: "ObjectTexts | None" = None) -> None:
    data = texts.reply(message) if texts is not None else _json(message)
    out.write(data.encode("utf-8"))
    out.write(b"\n")
    out.flush()


class ObjectTexts:
    """The JSON text of the tenant's connectors, rules and accepted domains,
    kept from one reply to the next while the tenant does not change.

    Reading a large tenant's rules again and again (every step takes an
    inventory) is otherwise mostly the encoding of the same objects. A text
    is kept only for an object that is, itself, in one of those collections
    of the state (the Get cmdlets hand out the tenant's own objects), and
    all of them are forgotten after any request that changed the tenant
    (`Tenant.dirty`), before its reply is written. Holding the object with
    its text keeps its id from being reused by another while it is kept.
    """

    COLLECTIONS = ("inbound_connectors", "outbound_connectors", "transport_rules",
                   "accepted_domains")

    def __init__(self, state: dict):
        self.state = state
        self._texts: dict[int, tuple[dict, str]] = {}

    def forget(self) -> None:
        self._texts.clear()

    def reply(self, message: dict) -> str:
        """`message` as one compact JSON text, members in protocol order."""
        output = message.get("output")
        if not isinstance(output, list) or len(output) < 2 or list(message)[:3] != [
                "id", "ok", "output"]:
            return _json(message)
        held = {id(obj) for kind in self.COLLECTIONS
                for obj in self.state.get(kind) or ()}
        parts = [self._text(obj) if id(obj) in held else _json(obj) for obj in output]
        head = _json({"id": message["id"], "ok": message["ok"]})[:-1]
        tail = _json({k: v for k, v in message.items() if k not in ("id", "ok",
                                                                      "output")})
        return f'{head},"output":[{",".join(parts)}]' + (
            "," + tail[1:] if tail != "{}" else "}")

    def _text(self, obj: dict) -> str:
        kept = self._texts.get(id(obj))
        if kept is None or kept[0] is not obj:
            kept = self._texts[id(obj)] = (obj, _json(obj))
        return kept[1]


def _log_call(request, response: dict) -> None:
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    command = request.get("command") if isinstance(request, dict) else None
    line = json.dumps({"pid": os.getpid(), "command": command,
                       "ok": response["ok"]}, default=str) + "\n"
    # One write on an O_APPEND file: lines of several children never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _start_dns(state: dict):
    try:
        from .dnsserver import start_dns_server
    except ModuleNotFoundError:
        log.warning("runbook.sandbox.dnsserver is not available; no tenant DNS")
        return None
    return start_dns_server(state.get("dns", {}).get("records", []))


def _start_openid(state: dict):
    from .openid_server import start_openid_server

    return start_openid_server(state)


def serve(state_path: str | os.PathLike, stdin: BinaryIO, stdout: BinaryIO, *,
          clock: Callable | None = None) -> int:
    """Serve one session: hello, then requests until EOF. Returns the exit code."""
    try:
        state = state_file.load(state_path)
    except state_file.StateFileError as exc:
        print(f"runbook.sandbox: {exc}", file=sys.stderr)
        return 2
    load_cmdlets()
    tenant = Tenant(state, clock=clock)
    dns = _start_dns(state)
    openid = _start_openid(state)
    texts = ObjectTexts(tenant.state)
    try:
        _write(stdout, hello(state, dns.address if dns else None,
                             openid.url if openid else None))
        for line in stdin:
            if not line.strip():
                continue
            request = _decode(line)
            response = answer(tenant, request if request is not None else [])
            _log_call(request, response)
            if tenant.dirty:
                state_file.save(state_path, tenant.state)
                tenant.dirty = False
                texts.forget()
            _write(stdout, response, texts)
    finally:
        if dns is not None:
            dns.stop()
        if openid is not None:
            openid.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runbook.sandbox",
                                     description="Serve a sandbox tenant over"
                                                 " runbook protocol 1.")
    parser.add_argument("--state", required=True, help="the tenant's state file")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr,
                        level=os.environ.get("RUNBOOK_SANDBOX_LOG", "WARNING"),
                        format="sandbox %(levelname)s %(name)s: %(message)s")
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must never reach the protocol stream
    return serve(args.state, sys.stdin.buffer, out)
