"""How the sandbox's cmdlets are declared and called.

Each simulated cmdlet is a function `(tenant, params) -> list[dict]`
registered under its PowerShell name with `@cmdlet("Get-InboundConnector")`.
Errors are raised as `CmdletError`, which becomes one error record of the
protocol response. Simulated module cmdlets (seppmail365cloud) call the
simulated Exchange cmdlets through `tenant.invoke(...)`, the way the real
module calls the real ones, so their faults and guards stack as on a tenant.
"""

from __future__ import annotations

from typing import Any, Callable

Cmdlet = Callable[["Any", dict], list]

COMMANDS: dict[str, Cmdlet] = {}


def cmdlet(name: str) -> Callable[[Cmdlet], Cmdlet]:
    """Register `fn` as the simulated cmdlet `name` (matched case-insensitively)."""

    def register(fn: Cmdlet) -> Cmdlet:
        COMMANDS[name.lower()] = fn
        fn.cmdlet_name = name  # type: ignore[attr-defined]
        return fn

    return register


def lookup(name: str) -> Cmdlet | None:
    return COMMANDS.get(name.lower())


class CmdletError(Exception):
    """An error record as Exchange Online or the module would write it."""

    def __init__(self, message: str, *, category: str = "NotSpecified",
                 error_id: str = "", target: str | None = None):
        super().__init__(message)
        self.message = message
        self.category = category
        self.error_id = error_id
        self.target = target

    def record(self) -> dict:
        return {"message": self.message, "category": self.category,
                "error_id": self.error_id, "target": self.target}
