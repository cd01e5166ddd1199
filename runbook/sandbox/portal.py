"""The Exchange admin center, as far as the runbook needs it: rename or delete a
connector by hand.

seppmail365cloud.md §5.1 and §10 step 4: connectors whose names contain "/"
or "\\" can no longer be changed or removed from PowerShell; the documented
way is to rename them in the portal and then delete them there. An engineer
does that by hand on a real tenant; in the sandbox, `runbook sandbox portal`
does it to the state file. The portal keeps Exchange's own guard: an outbound
connector that a transport rule routes through cannot be deleted or renamed
(exchange-objects.md §9 "Connectors referenced by rules").

Portal changes go into the change log like any other, so they take effect
after the tenant's propagation delay as well.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Callable

from . import exo
from .registry import CmdletError
from .tenant import Tenant

KINDS = {"inbound": "inbound_connectors", "outbound": "outbound_connectors"}


class PortalError(Exception):
    """The portal refused: unknown, ambiguous, invalid or still-referenced."""

    def __init__(self, message: str, *, connector: str | None = None):
        super().__init__(message)
        self.connector = connector


def _find(state: dict, name: str, direction: str | None) -> tuple[str, dict]:
    kinds = [direction] if direction else list(KINDS)
    found = [(kind, c) for kind in kinds for c in state[KINDS[kind]]
             if c["Name"].lower() == name.lower()]
    if not found:
        raise PortalError(f"no connector named {name!r}", connector=name)
    if len(found) > 1:
        raise PortalError(f"both an inbound and an outbound connector are named"
                          f" {name!r}; say which with direction", connector=name)
    return found[0]


def _guard_rules(state: dict, kind: str, connector: dict, action: str) -> None:
    if kind == "outbound":
        try:
            exo.still_referenced(state, connector, action)
        except CmdletError as exc:
            raise PortalError(exc.message.split("|")[-1],
                              connector=connector["Name"]) from exc


def rename_connector(state: dict, old: str, new: str, *,
                     direction: str | None = None,
                     clock: Callable[[], datetime] | None = None) -> dict:
    """Rename connector `old` to `new` in the state; returns the renamed one."""
    kind, connector = _find(state, old, direction)
    try:
        exo.check_name(new, connector=True)
    except CmdletError as exc:
        raise PortalError(exc.message.split("|")[-1], connector=old) from exc
    others = [c for c in state[KINDS[kind]] if c is not connector]
    if any(c["Name"].lower() == new.lower() for c in others):
        raise PortalError(f"a {kind} connector named {new!r} already exists",
                          connector=old)
    _guard_rules(state, kind, connector, "renamed")
    tenant = Tenant(state, clock=clock)
    before = copy.deepcopy(connector)
    exo.rename(connector, new, exo.transport_dn(state))
    exo.touch(connector, tenant.now())
    tenant.record_change("Portal: rename connector", before["Name"],
                         kind=KINDS[kind], before=before,
                         after=copy.deepcopy(connector))
    return copy.deepcopy(connector)


def delete_connector(state: dict, name: str, *, direction: str | None = None,
                     clock: Callable[[], datetime] | None = None) -> dict:
    """Delete connector `name` from the state; returns what was deleted."""
    kind, connector = _find(state, name, direction)
    _guard_rules(state, kind, connector, "deleted")
    tenant = Tenant(state, clock=clock)
    state[KINDS[kind]].remove(connector)
    tenant.record_change("Portal: delete connector", connector["Name"],
                         kind=KINDS[kind], before=copy.deepcopy(connector),
                         after=None)
    return copy.deepcopy(connector)
