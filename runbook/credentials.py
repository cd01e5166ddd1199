"""Where the run's secrets come from: the environment, or a file the user names.

The certificate password of an app-only login (README, "Against a real
tenant") is the environment variable ``RUNBOOK_CERT_PASSWORD``, or the content
of the file that ``RUNBOOK_CERT_PASSWORD_FILE`` names, without one trailing
newline (as ``echo`` or an editor leaves it). The variable wins when both are
set. A secret never comes from a parameter: parameters are recorded.

The pwsh child reads the password from its own environment variable
``RUNBOOK_CERT_PASSWORD`` (bridge.ps1), never from a request, so
`child_environment` puts the file's content there. `secret_values` lists every
secret in force, file included, for `runbook.audit.redact` to mask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

CERT_PASSWORD = "RUNBOOK_CERT_PASSWORD"
CERT_PASSWORD_FILE = "RUNBOOK_CERT_PASSWORD_FILE"
ACCESS_TOKEN = "RUNBOOK_ACCESS_TOKEN"
SECRET_ENV_VARS = (CERT_PASSWORD, ACCESS_TOKEN)


class SecretFileUnreadable(OSError):
    """The file RUNBOOK_CERT_PASSWORD_FILE names cannot be read."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{CERT_PASSWORD_FILE}={path}: the certificate password "
                         f"file cannot be read ({reason})")


def read_secret_file(path: str) -> str:
    """The file's text without one trailing newline; `SecretFileUnreadable` if not."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretFileUnreadable(path, reason) from exc
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def cert_password(environ: Mapping[str, str] | None = None) -> str:
    """The certificate password in force, or "" when none is set."""
    environ = os.environ if environ is None else environ
    if environ.get(CERT_PASSWORD):
        return environ[CERT_PASSWORD]
    path = environ.get(CERT_PASSWORD_FILE)
    return read_secret_file(path) if path else ""


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a PowerShell child: ours, with the password from the
    file in RUNBOOK_CERT_PASSWORD where only the file was given."""
    env = dict(os.environ if environ is None else environ)
    if not env.get(CERT_PASSWORD) and env.get(CERT_PASSWORD_FILE):
        env[CERT_PASSWORD] = read_secret_file(env[CERT_PASSWORD_FILE])
        log.debug("certificate password taken from %s", CERT_PASSWORD_FILE)
    return env


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value in force, longest first, for masking.

    A password file that cannot be read adds nothing: a password this process
    cannot read cannot reach the record through it either.
    """
    environ = os.environ if environ is None else environ
    found = {environ.get(name, "") for name in SECRET_ENV_VARS}
    path = environ.get(CERT_PASSWORD_FILE)
    if path:
        try:
            found.add(read_secret_file(path))
        except SecretFileUnreadable:
            pass
    return sorted(found - {""}, key=len, reverse=True)
