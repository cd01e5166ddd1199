"""Step 2: install the CBC-capable seppmail365cloud module (§0, §10 step 3)."""

from __future__ import annotations

from dataclasses import dataclass

from runbook import seppmail
from runbook.powershell.versions import Version


@dataclass
class InstallPlan:
    target: str
    installed: list[str]
    available: list[str]

    @property
    def needed(self) -> bool:
        return self.target not in self.installed

    def summary(self) -> str:
        have = ", ".join(self.installed) or "none"
        if not self.needed:
            return f"seppmail365cloud {self.target} is installed already (installed: {have})."
        return f"Would install seppmail365cloud {self.target} (installed now: {have})."


def plan(exo, requested: str = "") -> InstallPlan:
    """Choose the version: the one asked for, else the newest the gallery offers."""
    available = sorted(set(exo.gallery_versions()), key=Version.parse, reverse=True)
    installed = sorted(set(exo.installed_module_versions()), key=Version.parse,
                       reverse=True)
    if requested:
        if requested not in available:
            raise ValueError(f"seppmail365cloud {requested} is not in the gallery; "
                             f"available: {', '.join(available) or 'none'}")
        target = requested
    elif available:
        target = available[0]
    else:
        raise ValueError("the gallery offers no seppmail365cloud version")
    if Version.parse(target) < Version.parse(seppmail.CBC_MINIMUM_VERSION):
        raise ValueError(f"seppmail365cloud {target} cannot create certificate-based "
                         f"connectors; use {seppmail.CBC_MINIMUM_VERSION} or later")
    return InstallPlan(target=target, installed=installed, available=available)


# Modules seppmail365cloud needs from 1.3.0 on (§6). Its own import installs
# them without -Force, which fails while PSGallery is untrusted, as it is by
# default; installing them here first, with -Force, avoids that.
DEPENDENCIES = ("DNSClient-PS",)


def apply(exo, p: InstallPlan) -> list[str]:
    """Install if needed; return the installed versions afterwards."""
    if p.needed:
        exo.install_module(p.target)
        if Version.parse(p.target) >= Version.parse("1.3.0"):
            for name in DEPENDENCIES:
                exo.install_module("", name=name)
    return exo.installed_module_versions()


def verdict(p: InstallPlan, installed: list[str], confirmed: bool) -> tuple[str, str]:
    if p.target in installed:
        return "succeeded", f"seppmail365cloud {p.target} is installed."
    if not confirmed:
        return "planned", p.summary()
    return "failed", (f"seppmail365cloud {p.target} is not installed after "
                      "Install-Module; see the error above, then run this step again.")
