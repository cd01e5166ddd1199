"""Version numbers of PowerShell and its modules, and what the host must have.

`Version.parse("1.3.0-preview1")` gives a comparable value; a prerelease sorts
before its release, as in the PowerShell Gallery (NuGet SemVer 2.0 rules:
dot-separated labels, numeric parts compared as numbers, text parts
case-insensitively). `check_host(hello_versions)` turns the versions in a
child's hello into findings for the prerequisites step
(seppmail365cloud.md §6 and §10 step 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering
from typing import Iterable

_VERSION = re.compile(
    r"^\s*v?(?P<numbers>\d+(\.\d+){0,3})(-(?P<pre>[0-9A-Za-z.-]+))?"
    r"(\+[0-9A-Za-z.-]+)?\s*$")

# Every CBC-capable seppmail365cloud stops outside PowerShell 7 and 2.0 refuses the
# Desktop edition by name (seppmail365cloud.md §6); bridge.ps1 needs 7 besides.
PWSH_MINIMUM = "7.0.0"
# The CBC manifests require ExchangeOnlineManagement 3.0.0 (seppmail365cloud.md §6,
# p1/p2 row): the REST-based module; 2.x sessions run over remote PowerShell.
EXO_MINIMUM = "3.0.0"
# The first module version that creates certificate-based connectors (§3.3).
CBC_MINIMUM = "1.3.0-preview1"

# What each seppmail365cloud generation needs from the host (seppmail365cloud.md
# §6 "Prerequisite checks", §8): (from module version, PowerShell, EXO), newest
# first. The p1/p2 manifests ask for PowerShell 7.2.0; 1.3.0-1.3.6 only for 7.*.
MODULE_NEEDS = (
    ("2.0.2", "7.5.0", "3.9.0"),
    ("2.0.0", "7.5.0", "3.7.1"),
    ("1.3.7", "7.2.0", "3.0.0"),
    ("1.3.0", "7.0.0", "3.0.0"),
    ("1.3.0-preview1", "7.2.0", "3.0.0"),
)

# ExchangeOnlineManagement releases publicly reported to break
# Connect-ExchangeOnline; warnings, because each report depends on the machine
# or on other modules loaded in the same session. Only entries with a source.
EXO_KNOWN_BAD = {
    # PowerShell/PowerShell#25125 (2025-03): interactive (WAM) sign-in fails with
    # "Error Acquiring Token ... 0xffffffff80070520"; -Device works. The log
    # shows 3.7.0, the title 3.7.1.
    "3.7.0": "interactive (WAM) sign-in fails on some Windows machines; "
             "device login (-Device) works (PowerShell/PowerShell#25125)",
    "3.7.1": "interactive (WAM) sign-in fails on some Windows machines; "
             "device login (-Device) works (PowerShell/PowerShell#25125)",
    # Microsoft365DSC#6139 and System-Admins/m365assessment#22 (2025-05/06):
    # "Method not found: ... BrokerExtension.WithBroker"; downgrading helped.
    # Microsoft365DSC#6106 (2025-07) reports the same for 3.8.0.
    "3.7.2": "Connect-ExchangeOnline fails with 'Method not found: ...WithBroker' "
             "when another module loaded a different MSAL first "
             "(Microsoft365DSC#6139, #6106)",
    "3.8.0": "Connect-ExchangeOnline fails with 'Method not found: ...WithBroker' "
             "when another module loaded a different MSAL first "
             "(Microsoft365DSC#6106)",
    # invictus-ir/Microsoft-Extractor-Suite#184 and maester365/maester
    # discussion #1827: the same error with 3.9.2; 3.9.0 worked.
    "3.9.2": "Connect-ExchangeOnline fails with 'Method not found: ...WithBroker' "
             "on some machines; 3.9.0 worked (Microsoft-Extractor-Suite#184)",
}


@total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A module or PowerShell version: up to four numbers and a prerelease label."""

    numbers: tuple[int, ...]
    prerelease: tuple[str, ...] = ()
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str | "Version") -> "Version":
        """Read `3.0.0`, `1.3.0-preview1`, `7.6.0-preview.2`, `1.2.5.0`.

        Raises ValueError for anything else.
        """
        if isinstance(text, Version):
            return text
        found = _VERSION.match(str(text))
        if not found:
            raise ValueError(f"not a version: {text!r}")
        numbers = tuple(int(n) for n in found.group("numbers").split("."))
        pre = tuple(found.group("pre").split(".")) if found.group("pre") else ()
        return cls(numbers, pre, str(text).strip())

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple:
        numbers = self.numbers + (0,) * (4 - len(self.numbers))
        # A release sorts after every prerelease of the same numbers.
        pre = ((1,),) if not self.prerelease else tuple(
            (0, 0, int(p), "") if p.isdigit() else (0, 1, 0, p.lower())
            for p in self.prerelease)
        return numbers, pre

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: "Version") -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.numbers)) + (
            "-" + ".".join(self.prerelease) if self.prerelease else "")


@dataclass(frozen=True)
class Finding:
    """One verdict about the host: level is "error", "warning" or "ok"."""

    level: str
    item: str
    message: str


def check_host(versions: dict) -> list[Finding]:
    """Findings for the `versions` of a hello (docs/internals.md, protocol 1).

    Errors: PowerShell older than 7 or Windows PowerShell (Desktop edition);
    ExchangeOnlineManagement missing or older than 3.0.0; a newest installed
    seppmail365cloud older than 1.3.0-preview1 (not CBC-capable) or one whose
    PowerShell requirement the host misses. Warnings: EXO releases known to
    break connecting, and an EXO older than the installed module wants (its
    import installs a newer one; the session must then be restarted).
    """
    findings = [_check_pwsh(versions)]
    findings.extend(_check_exo(versions.get("ExchangeOnlineManagement")))
    if "seppmail365cloud" in versions:
        findings.extend(_check_module(versions))
    return findings


def _parsed(text) -> Version | None:
    try:
        return Version.parse(text) if text else None
    except ValueError:
        return None


def _check_pwsh(versions: dict) -> Finding:
    edition = str(versions.get("edition") or "")
    text = versions.get("pwsh")
    version = _parsed(text)
    if edition.lower() == "desktop":
        return Finding("error", "pwsh", f"Windows PowerShell {text} (Desktop edition) "
                       "cannot run the runbook: install PowerShell 7 and use pwsh")
    if version is None:
        return Finding("error", "pwsh", f"PowerShell version unknown ({text!r})")
    if version < Version.parse(PWSH_MINIMUM):
        return Finding("error", "pwsh", f"PowerShell {text} is too old: PowerShell 7 "
                       "or later is required")
    return Finding("ok", "pwsh", f"PowerShell {text} ({edition or 'Core'})")


def _check_exo(text) -> list[Finding]:
    item = "ExchangeOnlineManagement"
    if not text:
        return [Finding("error", item, "ExchangeOnlineManagement is not installed: "
                        "install 3.0.0 or later, then restart the session")]
    version = _parsed(text)
    if version is None:
        return [Finding("error", item, f"cannot read the version {text!r}")]
    if version < Version.parse(EXO_MINIMUM):
        return [Finding("error", item, f"ExchangeOnlineManagement {text} is too old: "
                        f"{EXO_MINIMUM} or later is required (REST-based V3 module)")]
    bad = _known_bad(version)
    if bad:
        return [Finding("warning", item, f"ExchangeOnlineManagement {text}: {bad}")]
    return [Finding("ok", item, f"ExchangeOnlineManagement {text}")]


def _known_bad(version: Version) -> str | None:
    for text, why in EXO_KNOWN_BAD.items():
        if Version.parse(text) == version:
            return why
    return None


def _installed(value) -> list[Version]:
    texts: Iterable = [value] if isinstance(value, str) else (value or [])
    found = [v for v in (_parsed(t) for t in texts) if v is not None]
    return sorted(found, reverse=True)


def _check_module(versions: dict) -> list[Finding]:
    item = "seppmail365cloud"
    installed = _installed(versions.get("seppmail365cloud"))
    if not installed:
        return [Finding("ok", item, "not installed yet; step 2 installs a "
                        "CBC-capable version")]
    newest = installed[0]
    if newest < Version.parse(CBC_MINIMUM):
        return [Finding("error", item, f"seppmail365cloud {newest} is not CBC-capable: "
                        f"{CBC_MINIMUM} or later is needed (step 2 installs it)")]
    return [Finding("ok", item, f"seppmail365cloud {newest} is CBC-capable")] + (
        _module_needs(newest, versions))


def _module_needs(module: Version, versions: dict) -> list[Finding]:
    for since, pwsh_needed, exo_needed in MODULE_NEEDS:
        if module >= Version.parse(since):
            break
    else:
        return []
    findings = []
    pwsh = _parsed(versions.get("pwsh"))
    if pwsh is not None and pwsh < Version.parse(pwsh_needed):
        findings.append(Finding("error", "pwsh", f"seppmail365cloud {module} needs "
                                f"PowerShell {pwsh_needed} or later, not {pwsh}"))
    exo = _parsed(versions.get("ExchangeOnlineManagement"))
    if exo is not None and exo < Version.parse(exo_needed):
        findings.append(Finding(
            "warning", "ExchangeOnlineManagement",
            f"seppmail365cloud {module} needs ExchangeOnlineManagement {exo_needed} "
            f"or later, not {exo}: its import installs it; restart the session then"))
    return findings
