"""Everything that can go wrong between the runbook and its PowerShell child.

The tree::

    PowerShellError                 base; catch this to catch them all
    ├── ChildStartError             the child program could not be started
    ├── ProtocolError               the child broke protocol 1 (or died)
    ├── SessionTimeout              no reply in time; the child was killed
    ├── CommandFailed               the command ran and wrote error records
    │   └── ObjectNotFound          ... ManagementObjectNotFoundException
    └── CommandRefused              the child refused to run it; nothing ran

Every class keeps its facts as attributes (command, error records, exit code,
stderr tail) so that callers and tests read data, not message text. The
foreign errors behind them (OSError, json errors) are chained as `__cause__`.
`reply_error` is the one place where a reply with `ok: false` becomes one of
these classes.
"""

from __future__ import annotations

import re
from typing import Sequence

NOT_FOUND_ID = "ManagementObjectNotFoundException"
REFUSAL_IDS = frozenset({"RunbookCommandNotAllowed", "RunbookConfirmationRequired"})

# Exchange Online error messages start with "<code>|<exception class>|" before
# the sentence a person should read (exchange-objects.md §9, "Identity lookups").
_EXCHANGE_PREFIX = re.compile(r"^Ex[0-9A-Fa-f]+\|(?P<cls>[\w.]+)\|")
_NOT_FOUND_OBJECT = re.compile(r"object '(?P<identity>.*)' couldn't be found")
_LINE_SHOWN = 200


class PowerShellError(Exception):
    """Base of every error raised by `runbook.powershell`."""

    def __reduce__(self):
        # Batch runs hand errors between processes; rebuild from the attributes
        # rather than from `args`, which the subclasses do not mirror.
        return _restore, (type(self), self.args, self.__dict__)


class ChildStartError(PowerShellError):
    """The operating system refused to start the child program."""

    def __init__(self, argv: Sequence[str], os_error: OSError):
        self.argv = list(argv)
        self.os_error = os_error
        reason = os_error.strerror or str(os_error)
        super().__init__(f"could not start {self.argv[0] if self.argv else '?'!r}: "
                         f"{reason}")


class ProtocolError(PowerShellError):
    """The child wrote something protocol 1 does not allow, or stopped answering.

    `line` is the offending stdout line (None when the child wrote nothing),
    `exit_code` the child's exit status once it is known, and `stderr_tail`
    the last part of what it wrote to stderr: usually the real reason.
    """

    def __init__(self, reason: str, *, line: str | None = None,
                 exit_code: int | None = None, stderr_tail: str = "",
                 command: str | None = None):
        self.reason = reason
        self.line = line
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.command = command
        super().__init__(reason)

    def __str__(self) -> str:
        parts = [f"{self.command}: {self.reason}" if self.command else self.reason]
        if self.line is not None:
            shown = self.line if len(self.line) <= _LINE_SHOWN else (
                self.line[:_LINE_SHOWN] + f"... ({len(self.line)} characters)")
            parts.append(f"line: {shown!r}")
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.stderr_tail:
            parts.append("stderr: " + self.stderr_tail.strip()[-500:])
        return "; ".join(parts)


class SessionTimeout(PowerShellError):
    """No reply within `timeout` seconds; the child (and its group) was killed."""

    def __init__(self, command: str, timeout: float, *, stderr_tail: str = ""):
        self.command = command
        self.timeout = timeout
        self.stderr_tail = stderr_tail
        super().__init__(f"{command} did not answer within {timeout:g} s; "
                         "the PowerShell child was stopped")


class _ReplyError(PowerShellError):
    """Shared shape of the two errors built from a reply with `ok: false`."""

    verb = "failed"

    def __init__(self, command: str, errors: Sequence[dict],
                 warnings: Sequence[str] = (), output: Sequence = ()):
        self.command = command
        self.errors = [dict(e) for e in errors]
        self.warnings = list(warnings)
        self.output = list(output)
        super().__init__(command, self.errors)

    @property
    def error_id(self) -> str:
        return str(self.errors[0].get("error_id") or "") if self.errors else ""

    @property
    def message(self) -> str:
        """The first error's message, without Exchange's code prefix."""
        if not self.errors:
            return "no error record"
        return readable_message(str(self.errors[0].get("message") or ""))

    def __str__(self) -> str:
        text = f"{self.command} {self.verb}: {self.message}"
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more errors)"
        return text


class CommandFailed(_ReplyError):
    """The command ran and wrote at least one error record."""


class ObjectNotFound(CommandFailed):
    """The identity the command was given does not exist in the tenant."""

    @property
    def identity(self) -> str | None:
        """The identity Exchange could not find, from the target or the message."""
        for record in self.errors:
            if record.get("target"):
                return str(record["target"])
            found = _NOT_FOUND_OBJECT.search(str(record.get("message") or ""))
            if found:
                return found.group("identity")
        return None


class CommandRefused(_ReplyError):
    """The child refused the request before running anything.

    `error_id` says why: RunbookCommandNotAllowed (not on the allow-list, or a
    parameter the bridge never takes from a request) or
    RunbookConfirmationRequired (a mutating command sent without `confirmed`).
    """

    verb = "refused"


def _restore(cls: type, args: tuple, state: dict) -> PowerShellError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def readable_message(message: str) -> str:
    """`Ex6F9304|...ManagementObjectNotFoundException|The operation...` -> the
    sentence after the prefix; other messages pass unchanged."""
    return _EXCHANGE_PREFIX.sub("", message, count=1)


def is_not_found(record: dict) -> bool:
    """True for Exchange's missing-identity record, in the bridge's or raw form."""
    if record.get("error_id") == NOT_FOUND_ID:
        return True
    found = _EXCHANGE_PREFIX.match(str(record.get("message") or ""))
    return bool(found) and found.group("cls").rsplit(".", 1)[-1] == NOT_FOUND_ID


def reply_error(command: str, errors: Sequence[dict], warnings: Sequence[str] = (),
                output: Sequence = ()) -> CommandFailed | CommandRefused:
    """The exception for a reply with `ok: false` (internals.md, protocol 1)."""
    if any(e.get("error_id") in REFUSAL_IDS for e in errors):
        return CommandRefused(command, errors, warnings, output)
    if errors and is_not_found(errors[0]):
        return ObjectNotFound(command, errors, warnings, output)
    return CommandFailed(command, errors, warnings, output)
