"""The simulated seppmail365cloud module: its cmdlets, per imported version.

Every function or alias that any modelled version exports is registered with
the sandbox (runbook.sandbox.registry) under its PowerShell name. A call is
dispatched on `tenant.imported_module`, the version Import-Module loaded
(runbook.sandbox.gallery):

- before Import-Module, and for a command the imported version does not
  export, the command does not exist: CommandNotFoundException, category
  ObjectNotFound (seppmail365cloud.md §1.1 lists the exports per version);
- parameters bind as PowerShell binds them, against the version's own
  parameter list (§1.2-§1.4, §8): an unknown name is NamedParameterNotFound,
  a value outside a ValidateSet is ParameterArgumentValidationError, a
  missing mandatory one MissingMandatoryParameter (the bridge's host is
  non-interactive, so PowerShell does not ask for it);
- the body is the sandbox model of that function (module_connectors,
  module_rules, module_setup); an exported function the sandbox does not
  model (New-SC365ExOReport, Update-SC365Setup, …) answers
  RunbookSandboxNotModelled instead of pretending.

The definitions per version live in `gallery/seppmail365cloud-<version>.json`
(runbook.sandbox.module_profile). This module never reads the runbook's own
SEPPmail knowledge (runbook.seppmail): the sandbox is an independent model,
so that the tests catch the runbook's mistakes.
"""

from __future__ import annotations

import logging

from . import module_connectors, module_rules, module_setup  # noqa: F401 (register)
from .module_profile import all_commands, load_profile
from .module_runtime import IMPLEMENTATIONS, Call, not_modelled
from .registry import cmdlet
from .tenant import command_not_found

log = logging.getLogger(__name__)


def _function(command: str):
    def run(tenant, params):
        version = tenant.imported_module
        if version is None:
            raise command_not_found(command)
        profile = load_profile(version)
        if not profile.exports(command):
            raise command_not_found(command)
        target = profile.resolve(command)
        body = IMPLEMENTATIONS.get(target.lower())
        if body is None or not profile.modelled(target):
            raise not_modelled(target, version)
        call = Call(tenant, profile, target, params or {})
        log.debug("%s (seppmail365cloud %s)", target, version)
        return body(call)

    run.__name__ = command.replace("-", "_").lower()
    run.__doc__ = f"{command}: dispatched on the imported seppmail365cloud version."
    # The child adds -Confirm:$false to confirmed requests only where the
    # function has it (runbook.sandbox.server); that depends on the version.
    run.should_process = lambda tenant: supports_should_process(tenant, command)
    return run


for _name in all_commands():
    cmdlet(_name)(_function(_name))


def supports_should_process(tenant, command: str) -> bool:
    """Whether `command` takes -WhatIf/-Confirm in this session.

    The child adds `-Confirm:$false` to confirmed requests "where the cmdlet
    has it" (docs/internals.md); for module functions that depends on the
    imported version (p2's New-SC365Setup has no ShouldProcess, 1.3.0's has).
    """
    version = tenant.imported_module
    if version is None:
        return False
    profile = load_profile(version)
    if not profile.exports(command):
        return False
    target = profile.resolve(command)
    return profile.modelled(target) and profile.cmdlet(target)["should_process"]
