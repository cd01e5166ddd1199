"""What `Import-Module seppmail365cloud` does, per version (seppmail365cloud.md §6).

In the order each version's manifest and psm1 run:

1.2.5           manifest requires PowerShell 7.2 and EXO 3.0.0 (loaded as a
                RequiredModule); warns when not connected.
1.3.0-preview*  as 1.2.5, but the psm1 first reads Get-OrganizationConfig
                unguarded (not connected: the command does not exist, which
                is an error record while the import still completes) and on a
                dehydrated organisation runs Enable-OrganizationCustomization;
                then the connection warning and the newer-version warning.
1.3.0           installs DNSClient-PS when missing, without -Force (so an
                Untrusted PSGallery stops the import); the connection
                warning; hydration inside try (a warning when it fails); the
                newer-version warning.
2.0.2           ScriptsToProcess: an Untrusted-PSGallery warning, PowerShell
                7.5.0 or the import stops, EXO 3.9.0 / DNSClient-PS 1.1.1 /
                PSWriteHTML 1.39.0 installed with -Force when missing or older;
                then, only when connected: hydration and the EX505293 test
                connector (created, disabled, and removed through the
                simulated Exchange, so both show in the change log); not
                connected: a warning; then the newer-version warning.

The newer-version warning compares the newest stable gallery release with
the manifest version (`1.3.0` for 1.3.0-preview1). Importing the version that
is already loaded does nothing unless -Force, as PowerShell does.
"""

from __future__ import annotations

import logging

from . import gallery
from .module_profile import MODULE_NAME, Version, load_profile
from .module_runtime import (
    EXO_MODULE, Call, connection_status, installed_modules, session, write_error,
)
from .registry import CmdletError

log = logging.getLogger(__name__)

TEST_CONNECTOR = "[SEPPmail.cloud] TempConnector EX505293"
EX505293_WARNING = (
    "This Tenant is not yet allowed to create OnPrem-Connectors (Exchange Error"
    " EX505293).If this tenant shall be integrated in PARALLEL mode, contact"
    " Microsoft Support and request connector creation. See SEPPmail.cloud"
    " onboarding mail for details.")
HYDRATION_WARNING = "Cannot detect Tenant hydration - maybe disconnected"
UNTRUSTED_WARNING = ("You do not Trust the PowerShellGallery as a module installation"
                     " source.")


def import_version(tenant, entry: dict, *, force: bool) -> None:
    """Load one installed seppmail365cloud version into the session."""
    version = entry["Version"]
    if tenant.imported_module == version and not force:
        return
    try:
        profile = load_profile(version)
    except KeyError:
        raise CmdletError(
            f"The sandbox does not model seppmail365cloud {version}.",
            category="NotImplemented", error_id="RunbookSandboxNotModelled",
            target=MODULE_NAME) from None
    _manifest(tenant, profile, entry)
    if not _scripts_to_process(tenant, profile):
        return

    previous = tenant.imported_module
    tenant.imported_module = version
    session(tenant).tenant_accepted_domains = None
    call = Call(tenant, profile, "Test-SC365ConnectionStatus", {})
    try:
        pending = _psm1(call, profile)
    except CmdletError:
        tenant.imported_module = previous
        raise
    log.info("imported seppmail365cloud %s", version)
    if pending is not None:
        raise pending  # a non-terminating error of the psm1: imported anyway


# --- manifest and ScriptsToProcess -------------------------------------------------


def _manifest(tenant, profile, entry: dict) -> None:
    needs = profile.import_checks["manifest_requires"]
    host = gallery.host_pwsh(tenant.state)
    minimum = needs.get("PowerShellVersion")
    if minimum and Version.parse(host).key() < Version.parse(minimum).key():
        raise CmdletError(
            f"The version of Windows PowerShell on this computer is '{host}'. The"
            f" module '{entry.get('InstalledLocation')}' requires a minimum Windows"
            f" PowerShell version of '{minimum}' to run. Verify that you have the"
            " minimum required version of Windows PowerShell installed, and then try"
            " again.", category="ResourceUnavailable",
            error_id="Modules_InsufficientPowerShellVersion,"
                     "Microsoft.PowerShell.Commands.ImportModuleCommand")
    exo = needs.get(EXO_MODULE)
    if exo:
        have = [e for e in installed_modules(tenant.state, EXO_MODULE)
                if Version.parse(e["Version"]).key() >= Version.parse(exo).key()]
        if not have:
            raise CmdletError(
                f"The required module '{EXO_MODULE}' is not loaded. Load the module"
                " or remove the module from 'RequiredModules' in the file"
                f" '{entry.get('InstalledLocation')}/{MODULE_NAME}.psd1'.",
                category="ResourceUnavailable",
                error_id="Modules_InvalidManifest,"
                         "Microsoft.PowerShell.Commands.ImportModuleCommand")
        session(tenant).loaded.add(EXO_MODULE.lower())


def _scripts_to_process(tenant, profile) -> bool:
    """2.0.x InitScript.ps1; False when its `Break` stops the import."""
    checks = profile.import_checks
    state = tenant.state
    if checks["gallery_trust_warning"] and not gallery.repository_trusted(state):
        tenant.warn(UNTRUSTED_WARNING)
    needed = checks["requires_pwsh"]
    host = gallery.host_pwsh(state)
    if needed and Version.parse(host).key() < Version.parse(needed).key():
        # The module writes this banner with Write-Host and then `Break`s; the
        # sandbox hands the banner's words over as a warning.
        tenant.warn(f"!!! Wrong PowerShell Version {host} found !!! PLEASE install"
                    f" PowerShell CORE {needed}+")
        return False
    for item in checks["installs"]:
        if item["Force"]:
            _install_required(tenant, item)
    return True


def _install_required(tenant, item: dict) -> None:
    """InitScript: install when missing or older than required, then import."""
    name, wanted = item["Name"], item["RequiredVersion"]
    have = gallery.installed_versions(tenant.state, name)
    if have and Version.parse(have[0]).key() >= Version.parse(wanted).key():
        return
    gallery.install(tenant, name, required_version=wanted, force=True)
    session(tenant).loaded.add(name.lower())


# --- the psm1 ----------------------------------------------------------------------


def _psm1(call: Call, profile) -> CmdletError | None:
    """Run the version's psm1 checks; returns a non-terminating error, if any."""
    checks = profile.import_checks
    pending = None
    if checks["dehydration"] == "unguarded":
        pending = _hydrate(call, guarded=False)
    for item in checks["installs"]:
        if not item["Force"]:
            _install_if_missing(call, item)

    connected, _ = connection_status(call)
    if checks["dehydration"] == "connected":
        if not connected:
            call.warn(profile.message("not_connected_import"))
        else:
            _hydrate(call, guarded=True)
            if checks["test_connector"]:
                _test_connector(call)
    else:
        if not connected:
            call.warn(profile.message("not_connected_import"))
        if checks["dehydration"] == "guarded":
            _hydrate(call, guarded=True)
    if checks["newer_version_warning"]:
        _newer_version(call, profile)
    return pending


def _hydrate(call: Call, *, guarded: bool) -> CmdletError | None:
    """§6: a dehydrated organisation gets Enable-OrganizationCustomization."""
    try:
        config = call.exo("Get-OrganizationConfig")
        if config and config[0].get("IsDehydrated"):
            call.exo("Enable-OrganizationCustomization")
    except CmdletError as error:
        if guarded:
            call.warn(HYDRATION_WARNING)
            return None
        return error
    return None


def _install_if_missing(call: Call, item: dict) -> None:
    """1.3.0: `Install-Module DNSCLient-PS` without -Force, errors fatal."""
    if installed_modules(call.state, item["Name"]):
        return
    try:
        gallery.install(call.tenant, item["Name"])
        session(call.tenant).loaded.add(item["Name"].lower())
    except CmdletError as error:
        raise write_error(MODULE_NAME, item["error"]) from error


def _test_connector(call: Call) -> None:
    """1.3.1+: a disabled OnPremises inbound connector, created and removed.

    The module writes `-ConnectorType OnPrem`; the sandbox passes the full
    enum name, which is what Exchange stores [I].
    """
    try:
        call.exo("New-InboundConnector", Name=TEST_CONNECTOR,
                 ConnectorType="OnPremises", TlsSenderCertificateName="test.nowhere.org",
                 SenderDomains="test.nowhere.org", RequireTls=True, Enabled=False)
        call.exo("Remove-InboundConnector", Identity=TEST_CONNECTOR, Confirm=False)
    except CmdletError as error:
        log.debug("EX505293 probe failed: %s", error.message)
        call.warn(EX505293_WARNING)


def _newer_version(call: Call, profile) -> None:
    try:
        online = call.tenant.invoke("Find-Module", Name="SEPPmail365cloud")
    except CmdletError as error:
        raise write_error(MODULE_NAME, "Could not determine newest module version due"
                          f" to exception {error.message}") from error
    if not online:
        return
    newest = Version.parse(online[0]["Version"])
    mine = Version.parse(profile.module_version)
    if newest.release_key() > mine.release_key():
        call.warn(f"You have version {mine.base}, but there is the new version"
                  f" {newest.text} of the SEPPmail365cloud module available on the"
                  " PowerShell Gallery. Update the module as soon as possible. More"
                  " info here"
                  " https://www.powershellgallery.com/packages/SEPPMail365cloud")
