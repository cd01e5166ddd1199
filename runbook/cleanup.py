"""Step 3: what to remove, in which order, backup first.

The module's own removal cmdlets miss legacy, slash-named, other-mode and
leftover objects and back nothing up (seppmail365cloud.md §5.1), so the
runbook removes objects itself, one by one and by GUID: rules first, because
Exchange refuses to remove a connector a rule still routes through
(exchange-objects.md §9 "Connectors referenced by rules").
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pandas as pd

from runbook import inventory
from runbook.inventory import Inventory, Item
from runbook.powershell import PowerShellError

log = logging.getLogger(__name__)

ORDER = ("transport_rule", "outbound_connector", "inbound_connector")


class CleanupFailed(RuntimeError):
    """A removal failed midway; carries what was and was not removed."""

    def __init__(self, failed: Item, error: Exception, removed: list[Item],
                 remaining: list[Item]):
        self.failed = failed
        self.error = error
        self.removed = removed
        self.remaining = remaining
        # Exchange's messages end with a full stop already.
        reason = str(error).rstrip(". ")
        kind = inventory.KIND_LABELS[failed.kind]
        super().__init__(
            f"removing {kind} {failed.name!r} failed: {reason}."
            f" Removed before it: {_names(removed) or 'nothing'}."
            f" Not removed: {_names([failed] + remaining)}.")


@dataclass
class Plan:
    """The removals cleanup would make, in order, and why nothing else is touched."""

    inventory: Inventory
    removals: list[Item] = field(default_factory=list)
    kept: list[Item] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    portal_actions: list[str] = field(default_factory=list)

    @property
    def scripted(self) -> list[Item]:
        """The removals PowerShell can make (all but slash-named connectors)."""
        return [i for i in self.removals if not i.portal_only]

    @property
    def empty(self) -> bool:
        return not self.removals

    def table(self) -> pd.DataFrame:
        return inventory.table(self.removals + self.kept)

    def summary(self) -> str:
        if self.empty:
            return "Nothing to remove: no SEPPmail rule or connector is left."
        counts = {}
        for item in self.removals:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        parts = [f"{n} {inventory.KIND_LABELS[k]}{'s' if n > 1 else ''}"
                 for k, n in counts.items()]
        return f"Would remove {', '.join(parts)}, rules first, after a backup."


def plan(inv: Inventory) -> Plan:
    """Order the removals and find what would stop them before anything changes."""
    items = inv.items()
    removals = sorted((i for i in items if i.remove),
                      key=lambda i: (ORDER.index(i.kind), _priority(i), i.name.lower()))
    kept = [i for i in items if not i.remove]
    result = Plan(inventory=inv, removals=removals, kept=kept)
    result.blocked = _blocking_actions(removals, kept)
    result.portal_actions = _portal_actions(removals)
    return result


def portal_name(name: str) -> str:
    """The name the engineer gives a slash-named connector in the admin center
    before deleting it: every `/` and `\\` becomes `-`, as module 0.9.6 did."""
    return re.sub(r"[\\/]", "-", name)


def _portal_actions(removals: list[Item]) -> list[str]:
    """Exchange no longer lets PowerShell touch connectors named with / or \\
    (seppmail365cloud.md §5.1): the admin center renames, then deletes them."""
    actions = []
    for item in removals:
        if item.portal_only:
            new_name = portal_name(item.name)
            actions.append(
                f"In the Exchange admin center, Mail flow > Connectors: rename the "
                f"{inventory.KIND_LABELS[item.kind]} {item.name!r} to {new_name!r} "
                f"(Exchange no longer accepts '/' or '\\' in connector names), "
                f"then delete {new_name!r}.")
    return actions


def _blocking_actions(removals: list[Item], kept: list[Item]) -> list[str]:
    actions = []
    removed_connectors = {i.name.lower() for i in removals if i.kind == "outbound_connector"}
    for rule in kept:
        if rule.kind != "transport_rule":
            continue
        target = str(rule.obj.get("RouteMessageOutboundConnector") or "").lower()
        if target and target in removed_connectors:
            actions.append(
                f"The transport rule {rule.name!r} is not SEPPmail's but routes through "
                f"{rule.obj.get('RouteMessageOutboundConnector')!r}, which cleanup must "
                f"remove: change or delete that rule first.")
    return actions


def backup(p: Plan, record, exo) -> list[str]:
    """Write every object cleanup will remove, with all its properties, to the run folder."""
    files = []
    for item in p.removals:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item.name).strip("_")[:60] or "object"
        ident = str(item.obj.get("Guid") or "")[:8]
        rel = f"backup/{item.kind}s/{safe}-{ident}.json" if ident else \
            f"backup/{item.kind}s/{safe}.json"
        record.write_json(rel, {"kind": item.kind, "class": item.cls, "object": item.obj})
        files.append(rel)
    entries = [{"kind": i.kind, "name": i.name, "file": f,
                "priority": i.obj.get("Priority")} for i, f in zip(p.removals, files)]
    if record.path_of("backup/index.json").exists():
        # A resumed step (after a failure midway or the portal) backs up only
        # what is left; the objects the first attempt removed must stay listed.
        earlier = [e for e in record.read_json("backup/index.json")
                   if e["file"] not in files]
        entries = earlier + entries
    record.write_json("backup/index.json", entries)
    record.event("backup", file="backup/index.json",
                 objects=[{"kind": i.kind, "name": i.name} for i in p.removals])
    for kind in ORDER:
        exo.mark_backed_up(kind, [i.obj for i in p.removals if i.kind == kind])
    return files


def execute(p: Plan, exo) -> list[Item]:
    """Remove in plan order; on a failure stop and say what was and was not removed."""
    removed: list[Item] = []
    for n, item in enumerate(p.removals):
        try:
            exo.remove(item.kind, item.obj)
        except PowerShellError as exc:
            raise CleanupFailed(item, exc, removed, p.removals[n + 1:]) from exc
        log.info("removed %s %s", item.kind, item.name)
        removed.append(item)
    return removed


def prove(before: Inventory, after: Inventory) -> list[str]:
    """Problems with the tenant after cleanup: SEPPmail objects left, others touched."""
    problems = [f"{inventory.KIND_LABELS[i.kind]} {i.name!r} ({i.cls}) is still there"
                for i in after.seppmail_items()]
    before_others = _others(before)
    after_others = _others(after)
    for key, obj in before_others.items():
        if key not in after_others:
            problems.append(f"{key} is gone although it is not SEPPmail's")
        elif inventory.comparable(obj) != inventory.comparable(after_others[key]):
            changed = inventory._changed_properties(inventory.comparable(obj),
                                                    inventory.comparable(after_others[key]))
            if set(changed) - {"Priority"}:
                problems.append(f"{key} changed ({', '.join(changed)}) although it is "
                                "not SEPPmail's")
    return problems


def _others(inv: Inventory) -> dict[str, dict]:
    return {f"{inventory.KIND_LABELS[i.kind]} {i.name!r}": i.obj
            for i in inv.items() if i.cls == inventory.NOT_OURS}


def _numbered(actions: list[str]) -> str:
    return " ".join(f"({n}) {a}" for n, a in enumerate(actions, 1))


def _priority(item: Item) -> int:
    value = item.obj.get("Priority")
    return value if isinstance(value, int) else 0


def _names(items: list[Item]) -> str:
    return ", ".join(repr(i.name) for i in items)


@dataclass
class Result:
    status: str
    message: str
    removed: list[Item] = field(default_factory=list)
    after: Inventory | None = None


def run(p: Plan, *, record, exo, confirmed: bool) -> Result:
    """Plan, then act: backup, remove rules before connectors, re-read, prove."""
    if p.empty:
        return Result("succeeded", p.summary())
    if p.blocked:
        return Result("failed", "Cleanup cannot start; nothing was removed. Do this "
                      "first, then run this step again: " + _numbered(p.blocked))
    if not confirmed:
        portal = (" Then, in the Exchange admin center: " + _numbered(p.portal_actions)
                  if p.portal_actions else "")
        return Result("planned", p.summary() + portal +
                      " Nothing was changed (confirm=False).")

    backup(p, record, exo)
    scripted = Plan(inventory=p.inventory, removals=p.scripted)
    try:
        removed = execute(scripted, exo)
    except CleanupFailed as exc:
        return Result("failed", str(exc), removed=exc.removed)
    if p.portal_actions:
        # Rules had to go first: the admin center refuses to rename or delete a
        # connector that a rule still routes through.
        return Result("failed", f"Removed {len(removed)} SEPPmail objects (backup in "
                      "backup/). The rest can only be removed by hand: "
                      + _numbered(p.portal_actions) + " Then run this step again "
                      "(`runbook resume RUN_DIR`).", removed)

    after = inventory.take(exo)
    record.write_json("inventory/after-cleanup.json", after.as_json())
    problems = prove(p.inventory, after)
    if problems:
        return Result("failed", "After cleanup: " + "; ".join(problems), removed, after)
    return Result("succeeded", f"Removed {len(removed)} SEPPmail objects (backup in "
                  "backup/); no SEPPmail rule or connector is left and every other "
                  "object is as it was.", removed, after)
