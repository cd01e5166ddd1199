"""The sandbox tenant's state file: one JSON document per simulated tenant.

The file stands in for the cloud: a notebook's child program loads it at start
and saves it after every request that changed something, so the next notebook
(the next child) sees the tenant as the last one left it. The schema is the
table in docs/internals.md ("Sandbox state file"); `schema` is 1.

Writes are atomic (temp file in the same folder, fsync, `os.replace`) so an
interrupted run never leaves half a tenant behind, and the file is mode 0600
because a state file is a tenant's configuration.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = 1

# A fixed namespace so that the same seed always yields the same GUID: scenario
# builds and repeated runs then compare object by object.
_NAMESPACE = uuid.UUID("5e99a11c-0c1d-4cbc-8a11-5a4db0c0ffee")


class StateFileError(Exception):
    """The state file is missing, not JSON, or not a schema-1 sandbox state."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"sandbox state {os.fspath(path)!r}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def new_guid(seed: str) -> str:
    """A GUID string derived from `seed` alone (UUID version 5)."""
    return str(uuid.uuid5(_NAMESPACE, seed))


def iso(moment: datetime) -> str:
    """UTC wire form of a date as EXO V3 prints it: `2026-07-23T22:55:13Z`.

    exchange-objects.md §8: a UTC DateTime serialises as ISO 8601 with `Z`.
    """
    moment = moment.astimezone(timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Read an ISO 8601 time written by `iso` (or with an offset) as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def load(path: str | os.PathLike) -> dict:
    """Read a sandbox state file; raises StateFileError when it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StateFileError(path, exc.strerror or str(exc)) from exc
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateFileError(path, f"not JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise StateFileError(path, f"not a schema-{SCHEMA} sandbox state")
    return state


def save(path: str | os.PathLike, state: dict) -> None:
    """Write `state` to `path` atomically, readable by the owner only."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    data = json.dumps(state, indent=1, ensure_ascii=False, sort_keys=False)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    log.debug("saved sandbox state %s (%d bytes)", target, len(data))
