"""One simulated tenant as a child program sees it while it runs.

`Tenant` wraps the state dict (runbook.sandbox.state) with what belongs to a
single PowerShell session and not to the cloud: the Exchange Online
connection, the imported seppmail365cloud version and the warnings of the
request being answered. Cmdlets reach one another through `Tenant.invoke`, the
way the real module calls the real Exchange cmdlets, so guards stack as they
do on a tenant.

`bind_parameters` is the parameter binder every simulated cmdlet uses: names
match case-insensitively or by an unambiguous prefix, as PowerShell binds
them, and anything else is the error record PowerShell writes, so the runbook
cannot send a misspelt parameter and have it ignored.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable, Iterable

from .registry import CmdletError, lookup
from .state import iso, parse_time

log = logging.getLogger(__name__)

# PowerShell's common parameters: every advanced function and cmdlet takes them.
COMMON_PARAMETERS = (
    "Verbose", "Debug", "ErrorAction", "WarningAction", "InformationAction",
    "ProgressAction", "ErrorVariable", "WarningVariable", "InformationVariable",
    "OutVariable", "OutBuffer", "PipelineVariable",
)
SHOULD_PROCESS_PARAMETERS = ("WhatIf", "Confirm")


def command_not_found(command: str) -> CmdletError:
    """The record PowerShell writes for a command that is not loaded."""
    return CmdletError(
        f"The term '{command}' is not recognized as a name of a cmdlet, function,"
        " script file, or executable program.",
        category="ObjectNotFound", error_id="CommandNotFoundException",
        target=command)


class Tenant:
    """The state of one simulated tenant plus this child's session.

    `clock` (a callable returning an aware datetime) replaces the wall clock
    in tests; everything time-dependent (change log, token expiry, message
    trace) reads `now()`.
    """

    def __init__(self, state: dict, *, clock: Callable[[], datetime] | None = None):
        self.state = state
        self._clock = clock
        self.connection: dict | None = None
        self.imported_module: str | None = None
        self.dirty = False
        self._warnings: list[str] = []

    # --- time -----------------------------------------------------------
    def now(self) -> datetime:
        moment = self._clock() if self._clock else datetime.now(timezone.utc)
        return moment.astimezone(timezone.utc)

    # --- one request ----------------------------------------------------
    def warn(self, text: str) -> None:
        self._warnings.append(str(text))

    def take_warnings(self) -> list[str]:
        warnings, self._warnings = self._warnings, []
        return warnings

    def invoke(self, name: str, **params) -> list[dict]:
        """Run the simulated cmdlet `name`; raises CmdletError as it would fail."""
        fn = lookup(name)
        if fn is None:
            raise command_not_found(name)
        # Copies: a caller editing a result must not edit the tenant.
        return copy_data(fn(self, params))

    # --- what is loaded in this session ----------------------------------
    def require_connected(self, command: str) -> None:
        """EXO cmdlets exist only after Connect-ExchangeOnline loaded them.

        exchange-objects.md §7: the cmdlets come from a temporary module
        (ModuleName `tmpEXO_…`) that the connection creates.
        """
        if self.connection is None:
            raise command_not_found(command)

    def require_module(self, command: str) -> None:
        """SC365 cmdlets exist only after Import-Module seppmail365cloud."""
        if self.imported_module is None:
            raise command_not_found(command)

    # --- the change log ---------------------------------------------------
    def record_change(self, command: str, target: str | None, *,
                      kind: str | None = None, before: dict | None = None,
                      after: dict | None = None) -> dict:
        """Append to `state["changes"]` and mark the state for saving.

        `kind`, `before` and `after` (the object's collection key and its
        full form either side of the change) let the message trace tell what
        was in effect at an earlier moment (runbook.sandbox.trace).
        """
        entry = {"at": iso(self.now()), "command": command, "target": target}
        if kind is not None:
            entry.update(kind=kind, before=before, after=after)
        self.state.setdefault("changes", []).append(entry)
        self.dirty = True
        log.debug("change %s %s", command, target)
        return entry

    def changes_since(self, moment: datetime) -> list[dict]:
        return [c for c in self.state.get("changes", [])
                if parse_time(c["at"]) > moment]


def copy_data(value):
    """A deep copy of JSON-shaped data (dicts, lists, scalars), made fast.

    `copy.deepcopy` keeps a memo for shared and cyclic references, which
    cmdlet output never has; this is several times quicker on a tenant's
    worth of rules. Anything else (datetimes, strings) is immutable and shared.
    """
    kind = type(value)
    if kind is dict:
        return {key: copy_data(item) for key, item in value.items()}
    if kind is list:
        return [copy_data(item) for item in value]
    return value


# --- parameter binding ---------------------------------------------------

def _transform_error(name: str, value, wanted: str, detail: str = "") -> CmdletError:
    kind = type(value).__name__
    text = (f"Cannot process argument transformation on parameter '{name}'."
            f" Cannot convert value \"{value}\" ({kind}) to type \"{wanted}\".")
    return CmdletError(text + (" " + detail if detail else ""),
                       category="InvalidArgument",
                       error_id="ParameterArgumentTransformationError", target=name)


def _as_string(name, value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        # PowerShell joins an array with $OFS (a space) when a string is wanted.
        return " ".join(str(_as_string(name, v)) for v in value)
    raise _transform_error(name, value, "System.String")


def _as_bool(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    raise _transform_error(
        name, value, "System.Boolean",
        "Boolean parameters accept only Boolean values and numbers,"
        " such as $True, $False, 1 or 0.")


def _as_strings(name, value):
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [_as_string(name, v) for v in items]


def _as_multi(name, value):
    """A multi-valued property: a whole list, or an @{Add=…; Remove=…} edit."""
    if isinstance(value, dict):
        edit = {"Add": [], "Remove": []}
        for key, items in value.items():
            canon = {"add": "Add", "remove": "Remove"}.get(str(key).lower())
            if canon is None:
                raise _transform_error(name, value, "MultiValuedProperty",
                                       f"The hashtable key '{key}' is not valid;"
                                       " use Add or Remove.")
            edit[canon] = _as_strings(name, items) or []
        return edit
    return _as_strings(name, value)


def _as_int(name, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise _transform_error(name, value, "System.Int32")


def _as_datetime(name, value):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise _transform_error(name, value, "System.DateTime")


def _as_enum(name, value, choices: tuple[str, ...]):
    if value is None:
        return None
    text = _as_string(name, value)
    for choice in choices:
        if choice.lower() == text.lower():
            return choice
    raise CmdletError(
        f"Cannot bind parameter '{name}'. Unable to match the identifier name"
        f" {text} to a valid enumerator name. Specify one of the following"
        f" enumerator names and try again: {', '.join(choices)}",
        category="InvalidArgument",
        error_id="ParameterArgumentTransformationError", target=name)


_CONVERTERS = {
    "string": _as_string, "bool": _as_bool, "switch": _as_bool,
    "strings": _as_strings, "multi": _as_multi, "int": _as_int,
    "datetime": _as_datetime, "any": lambda name, value: value,
}


def _resolve_name(command: str, given: str, names: Iterable[str]) -> str:
    names = list(names)
    lowered = given.lower()
    for name in names:
        if name.lower() == lowered:
            return name
    matches = [n for n in names if n.lower().startswith(lowered)] if given else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = " ".join("-" + m for m in matches)
        raise CmdletError(
            f"Parameter cannot be processed because the parameter name '{given}'"
            f" is ambiguous. Possible matches include: {listed}.",
            category="InvalidArgument", error_id="AmbiguousParameter",
            target=given)
    raise CmdletError(
        f"A parameter cannot be found that matches parameter name '{given}'.",
        category="InvalidArgument", error_id="NamedParameterNotFound",
        target=given)


def bind_parameters(command: str, params: dict, spec: dict[str, str], *,
                    required: Iterable[str] = (), should_process: bool = False
                    ) -> dict:
    """Bind request parameters to `spec` (canonical name -> kind) as PowerShell.

    Kinds: string, bool, switch, strings, multi (list or Add/Remove
    hashtable), int, datetime, any, or `enum:A|B|C`. Returns the bound
    parameters under their canonical names; common parameters are accepted
    and dropped, WhatIf/Confirm are kept where the cmdlet has them.
    """
    extra = COMMON_PARAMETERS + (SHOULD_PROCESS_PARAMETERS if should_process else ())
    names = list(spec) + list(extra)
    bound: dict = {}
    for given, value in params.items():
        name = _resolve_name(command, str(given), names)
        if name in COMMON_PARAMETERS:
            continue
        kind = spec.get(name, "switch")
        if kind.startswith("enum:"):
            bound[name] = _as_enum(name, value, tuple(kind[5:].split("|")))
        else:
            bound[name] = _CONVERTERS[kind](name, value)
    missing = [r for r in required if bound.get(r) in (None, "", [])]
    if missing:
        raise CmdletError(
            "Cannot process command because of one or more missing mandatory"
            f" parameters: {' '.join(missing)}.",
            category="InvalidArgument", error_id="MissingMandatoryParameter",
            target=command)
    return bound
