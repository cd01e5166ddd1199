"""The PowerShell layer: a protocol-1 client and the pwsh side it talks to.

`Session` drives one child program (`pwsh` running bridge.ps1 on a real
tenant, or the sandbox); `records` normalises what comes back; `versions`
judges the host's PowerShell and module versions.
"""

from .errors import (ChildStartError, CommandFailed, CommandRefused, ObjectNotFound,
                     PowerShellError, ProtocolError, SessionTimeout)
from .session import Reply, Session, pwsh_command, sandbox_command

__all__ = [
    "ChildStartError", "CommandFailed", "CommandRefused", "ObjectNotFound",
    "PowerShellError", "ProtocolError", "Reply", "Session", "SessionTimeout",
    "pwsh_command", "sandbox_command",
]
