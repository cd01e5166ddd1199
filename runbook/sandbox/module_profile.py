"""The seppmail365cloud versions the sandbox models, read from `gallery/*.json`.

Each `gallery/seppmail365cloud-<version>.json` holds one version's
definitions as data: what it exports (seppmail365cloud.md §1.1), each
cmdlet's parameters (§1.2-§1.4, §8), the connector and rule definitions it
splats into Exchange (§2, §3), its region lists (§4) and its import-time
checks (§6). The code in `module_*.py` is the behaviour shared by all
versions; where versions differ it asks the profile for a *trait*:

===========================  ====================================================
trait                        what it selects (seppmail365cloud.md section)
===========================  ====================================================
inbound_certificate          `*.<region>` (1.2.5) or `<tenantId>.<region>` (§3.3)
connector_domain_check       none / accepted-domain test / Confirm-… (§1.2 step 1)
rule_domain_check            none / `-contains` on the joined list / Confirm (§1.3)
accepted_domains_cache       Confirm reads `$tenantAcceptedDomains` (§6)
drops_onmicrosoft            `*.onmicrosoft.com` dropped from rule lists (§1.3)
rule_domain_lists            ExceptIf… exclusion (1.2.5) or inclusion lists (§2.3)
inline_warning               2.0 warns that inline affects all domains (§1.2 step 2)
allowed_senders              2.0 support addresses for AllowedSenders (§1.2 step 3)
existing_rules_lookup        `-Identity '[SEPPmail.Cloud]*'` or route+name (§1.2 s.7)
connector_rule_test          the rule test, inverted in 2.0 (§1.2, §11.2)
arc_trusted_sealer           the sealer written to ArcConfig (§1.2 step 8)
rule_priority                base + SMPriority or a running index (§2.2)
rule_guard_in_should_process 2.0: -WhatIf skips the connector guard (§1.3)
get_rules / remove_rules     JSON names or identity patterns (§1.4, §5.1)
get_connectors               output shape and order of Get-SC365Connectors (§1.4)
inbound_output_region        p1 selects Region by a string expression [I]
rule_output                  Select-Object view (p1, 1.2.5) or the full rule
===========================  ====================================================

Versions order as PowerShellGet orders them: a prerelease comes before its
release (1.3.0-preview1 < 1.3.0-preview2 < 1.3.0).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

GALLERY_DIR = Path(__file__).with_name("gallery")
MODULE_NAME = "seppmail365cloud"

_VERSION = re.compile(r"^(\d+(?:\.\d+){1,3})(?:-([0-9A-Za-z][0-9A-Za-z-]*))?$")


@dataclass(frozen=True)
class Version:
    """A module version as the gallery writes it: `1.3.0` or `1.3.0-preview1`."""

    text: str
    release: tuple[int, ...]
    prerelease: str = ""

    @classmethod
    def parse(cls, text: str) -> "Version":
        match = _VERSION.match(str(text).strip())
        if not match:
            raise ValueError(f"not a module version: {text!r}")
        release = tuple(int(part) for part in match.group(1).split("."))
        return cls(str(text).strip(), release, match.group(2) or "")

    @property
    def base(self) -> str:
        """The folder and manifest version: `1.3.0` for `1.3.0-preview1`."""
        return ".".join(str(part) for part in self.release)

    def key(self) -> tuple:
        padded = self.release + (0,) * (4 - len(self.release))
        return padded, 0 if self.prerelease else 1, self.prerelease.lower()

    def release_key(self) -> tuple:
        """Ordering by the System.Version part only, as Import-Module does."""
        return self.release + (0,) * (4 - len(self.release))

    def __lt__(self, other: "Version") -> bool:
        return self.key() < other.key()

    def __str__(self) -> str:
        return self.text


def newest(versions) -> str | None:
    """The newest of a collection of version strings (None when empty)."""
    parsed = [Version.parse(v) for v in versions]
    return max(parsed, key=Version.key).text if parsed else None


class Profile:
    """One modelled module version: its definitions and its traits."""

    def __init__(self, data: dict):
        self.data = data
        self.version = Version.parse(data["Version"])
        self.module_version = data["ModuleVersion"]
        self._exports = {n.lower(): n for n in data["FunctionsToExport"]}
        self._aliases = {a.lower(): t for a, t in data["AliasesToExport"].items()}
        self._cmdlets = {n.lower(): n for n in data["cmdlets"]}

    def __repr__(self) -> str:
        return f"Profile({self.version.text})"

    # --- commands -----------------------------------------------------------
    def exports(self, command: str) -> bool:
        """True when the version makes `command` (function or alias) available."""
        key = command.lower()
        return key in self._exports or key in self._aliases

    def resolve(self, command: str) -> str:
        """The function a command or alias runs, spelt as the module spells it."""
        key = command.lower()
        target = self._aliases.get(key)
        return target if target else self._exports.get(key, command)

    def modelled(self, command: str) -> bool:
        return command.lower() in self._cmdlets

    def cmdlet(self, command: str) -> dict:
        """The parameter definition of a modelled function (KeyError if none)."""
        return self.data["cmdlets"][self._cmdlets[command.lower()]]

    # --- behaviour ------------------------------------------------------------
    def trait(self, name: str):
        return self.data["traits"][name]

    def message(self, key: str, **fields) -> str:
        return self.data["messages"][key].format(**fields)

    @property
    def import_checks(self) -> dict:
        return self.data["import"]

    # --- definitions -----------------------------------------------------------
    def connector(self, direction: str, routing: str) -> dict:
        """The JSON section New-SC365Connectors splats, as a fresh copy (§3.1)."""
        return copy.deepcopy(self.data["connectors"][direction].get(routing) or {})

    def rule_files(self) -> list[dict]:
        """The rule definitions in file-name order, as Get-ChildItem lists them."""
        return copy.deepcopy(self.data["rules"])

    def region(self, name: str | None) -> dict | None:
        if not name:
            return None
        return copy.deepcopy(self.data["regions"].get(name.lower()))


@lru_cache(maxsize=None)
def _read(version: str) -> dict:
    path = GALLERY_DIR / f"{MODULE_NAME}-{version}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def modelled_versions() -> list[str]:
    """Every seppmail365cloud version with a definition file, oldest first."""
    prefix = f"{MODULE_NAME}-"
    found = [p.stem[len(prefix):] for p in GALLERY_DIR.glob(f"{prefix}*.json")]
    return sorted(found, key=lambda v: Version.parse(v).key())


def load_profile(version: str) -> Profile:
    """The profile of a modelled version; KeyError for one the sandbox lacks."""
    if version not in modelled_versions():
        raise KeyError(f"seppmail365cloud {version} is not modelled by the sandbox")
    return Profile(_read(version))


def all_commands() -> list[str]:
    """Every function and alias any modelled version exports."""
    names: dict[str, str] = {}
    for version in modelled_versions():
        data = _read(version)
        for name in list(data["FunctionsToExport"]) + list(data["AliasesToExport"]):
            names.setdefault(name.lower(), name)
    return sorted(names.values())
