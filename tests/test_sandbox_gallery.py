"""The simulated PowerShell Gallery and PowerShellGet cmdlets of the sandbox.

Each test pins one PowerShellGet 2.2 / PowerShell behaviour that the runbook's
install step meets (runbook.sandbox.gallery docstring); versions and dates
are seppmail365cloud.md §0, the import-time effects §6. The gallery cmdlets
need no Exchange connection, so most tests do not connect.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from runbook.sandbox import exo, gallery, module, scenarios  # noqa: F401 (register)
from runbook.sandbox.module_profile import Version, modelled_versions
from runbook.sandbox.registry import CmdletError
from runbook.sandbox.tenant import Tenant

NOW = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)


def tenant(scenario: str = "legacy-inline", *, trusted: bool = False) -> Tenant:
    state = scenarios.build(scenario, now=NOW, propagation_delay_s=0)
    if trusted:
        state["gallery"]["repositories"][0]["InstallationPolicy"] = "Trusted"
    return Tenant(state, clock=lambda: NOW)


def failure(t: Tenant, command: str, **params) -> CmdletError:
    with pytest.raises(CmdletError) as caught:
        t.invoke(command, **params)
    return caught.value


def versions(items: list[dict]) -> list[str]:
    return [i["Version"] for i in items]


def installed(t: Tenant, name: str = "seppmail365cloud") -> list[str]:
    return gallery.installed_versions(t.state, name)


# --- the gallery's content -----------------------------------------------------------


def test_default_gallery_holds_the_five_versions_with_their_dates():
    """§0: 1.2.5 (2022-11), p1 (2022-12-17), p2 (2022-12-30), 1.3.0 GA
    (2023-01-29), 2.0.2 (2025-09-10); PSGallery is Untrusted by default."""
    offered = {m["Version"]: m["PublishedDate"][:10]
               for m in gallery.default_gallery()["modules"]
               if m["Name"] == "seppmail365cloud"}
    assert offered == {"1.2.5": "2022-11-08", "1.3.0-preview1": "2022-12-17",
                       "1.3.0-preview2": "2022-12-30", "1.3.0": "2023-01-29",
                       "2.0.2": "2025-09-10"}
    assert gallery.default_gallery()["repositories"] == [
        {"Name": "PSGallery", "SourceLocation": "https://www.powershellgallery.com/api/v2",
         "InstallationPolicy": "Untrusted"}]
    assert modelled_versions() == ["1.2.5", "1.3.0-preview1", "1.3.0-preview2",
                                   "1.3.0", "2.0.2"]


def test_versions_order_prerelease_before_release():
    """PowerShellGet's order: 1.3.0-preview1 < 1.3.0-preview2 < 1.3.0."""
    ordered = sorted(["1.3.0", "2.0.2", "1.3.0-preview2", "1.2.5", "1.3.0-preview1"],
                     key=lambda v: Version.parse(v).key())
    assert ordered == ["1.2.5", "1.3.0-preview1", "1.3.0-preview2", "1.3.0", "2.0.2"]
    assert Version.parse("1.3.0-preview1").base == "1.3.0"


def test_default_install_is_exo_3_9_0_and_the_1_2_5_module():
    """docs/internals.md hello: ExchangeOnlineManagement 3.9.0 is installed."""
    entries = gallery.default_installed_modules(NOW)
    assert [(e["Name"], e["Version"], e["Repository"]) for e in entries] == [
        ("ExchangeOnlineManagement", "3.9.0", "PSGallery"),
        ("seppmail365cloud", "1.2.5", "PSGallery")]
    assert entries[1]["InstalledDate"] == "2026-03-02T09:00:00Z"


# --- Find-Module ---------------------------------------------------------------------------


def test_find_module_returns_the_newest_release_without_a_connection():
    """Newest wins; prereleases are not considered without -AllowPrerelease."""
    found = tenant().invoke("Find-Module", Name="SEPPmail365cloud")
    assert [(f["Name"], f["Version"], f["Repository"], f["PublishedDate"])
            for f in found] == [("seppmail365cloud", "2.0.2", "PSGallery",
                                 "2025-09-10T18:22:42Z")]
    assert found[0]["Description"] == ("Integrate and maintain Exchange Online with"
                                       " SEPPmail.Cloud")


def test_find_module_all_versions_hides_prereleases_unless_allowed():
    """PowerShellGet: -AllVersions lists newest first; prereleases (§0: p1, p2)
    only with -AllowPrerelease."""
    t = tenant()
    assert versions(t.invoke("Find-Module", Name="seppmail365cloud",
                             AllVersions=True)) == ["2.0.2", "1.3.0", "1.2.5"]
    assert versions(t.invoke("Find-Module", Name="seppmail365cloud", AllVersions=True,
                             AllowPrerelease=True)) == [
        "2.0.2", "1.3.0", "1.3.0-preview2", "1.3.0-preview1", "1.2.5"]


def test_prerelease_required_version_needs_allow_prerelease():
    """PowerShellGet: a prerelease string in -RequiredVersion is an error
    without -AllowPrerelease."""
    error = failure(tenant(), "Find-Module", Name="seppmail365cloud",
                    RequiredVersion="1.3.0-preview1")
    assert error.error_id == ("AllowPrereleaseRequiredToUsePrereleaseStringInVersion,"
                              "Find-Module")
    assert error.category == "InvalidArgument"
    found = tenant().invoke("Find-Module", Name="seppmail365cloud",
                            RequiredVersion="1.3.0-preview1", AllowPrerelease=True)
    assert versions(found) == ["1.3.0-preview1"]
    assert found[0]["AdditionalMetadata"] == {"IsPrerelease": "true"}


def test_unknown_version_or_name_is_no_match_found():
    """PowerShellGet NoMatchFoundForCriteria for a version or name the
    gallery does not hold (1.3.9 is not in §0's list)."""
    error = failure(tenant(), "Find-Module", Name="seppmail365cloud",
                    RequiredVersion="1.3.9")
    assert error.message == ("No match was found for the specified search criteria"
                             " and module name 'seppmail365cloud'. Try Get-PSRepository"
                             " to see all available registered module repositories.")
    assert (error.category, error.error_id) == (
        "ObjectNotFound", "NoMatchFoundForCriteria,"
                          "Microsoft.PowerShell.PackageManagement.Cmdlets.FindPackage")
    assert failure(tenant(), "Find-Module", Name="seppmail365").message.endswith(
        "module name 'seppmail365'. Try Get-PSRepository to see all available"
        " registered module repositories.")


def test_version_parameters_need_a_single_name():
    """PowerShellGet Validate-VersionParameters."""
    error = failure(tenant(), "Find-Module", Name=["seppmail365cloud", "PSWriteHTML"],
                    RequiredVersion="2.0.2")
    assert error.error_id == "VersionParametersAreAllowedOnlyWithSingleName,Find-Module"


# --- Install-Module ---------------------------------------------------------------------------


def test_install_from_untrusted_gallery_needs_force():
    """PSGallery Untrusted: Install-Module asks, the non-interactive host
    cannot answer; -Force installs."""
    t = tenant()
    error = failure(t, "Install-Module", Name="seppmail365cloud",
                    RequiredVersion="2.0.2", Confirm=False)
    assert error.message == ("PowerShell is in NonInteractive mode. Read and Prompt"
                             " functionality is not available.")
    assert installed(t) == ["1.2.5"]
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="2.0.2",
             Force=True, Confirm=False)
    assert installed(t) == ["2.0.2", "1.2.5"]
    assert t.dirty


def test_install_required_version_goes_side_by_side_and_keeps_the_old_one():
    """An installed 1.2.5 stays when 1.3.0-preview1 is installed next to it."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="1.3.0-preview1",
             AllowPrerelease=True, Scope="CurrentUser")
    assert installed(t) == ["1.3.0-preview1", "1.2.5"]
    found = t.invoke("Get-InstalledModule", Name="seppmail365cloud", AllVersions=True,
                     AllowPrerelease=True)
    assert versions(found) == ["1.3.0-preview1", "1.2.5"]
    assert found[0]["InstalledLocation"].endswith("/seppmail365cloud/1.3.0")


def test_install_without_force_or_version_warns_instead_of_adding():
    """PowerShellGet ModuleAlreadyInstalledSxS: a different version installed
    and neither -Force nor -RequiredVersion: a warning, nothing installed."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud")
    assert installed(t) == ["1.2.5"]
    [warning] = t.take_warnings()
    assert warning.startswith("Version '1.2.5' of module 'seppmail365cloud' is already"
                              " installed at '")
    assert warning.endswith("To install version '2.0.2', run Install-Module and add the"
                            " -Force parameter, this command will install version"
                            " '2.0.2' side-by-side with version '1.2.5'.")


def test_install_of_an_installed_version_warns_to_use_force():
    """ModuleWithRequiredVersionAlreadyInstalled."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="1.2.5")
    [warning] = t.take_warnings()
    assert warning.endswith("To reinstall this version '1.2.5', run Install-Module or"
                            " Updated-Module cmdlet with the -Force parameter.")


def test_release_replaces_its_preview_in_the_same_folder():
    """Modules install into <Name>/<System.Version>: 1.3.0 GA overwrites p1."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="1.3.0-preview1",
             AllowPrerelease=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="1.3.0")
    assert installed(t) == ["1.3.0", "1.2.5"]


def test_install_all_users_scope_uses_the_shared_folder():
    """-Scope AllUsers: PowerShell 7's shared module folder on Linux; PSWriteHTML
    1.39.0 is the version 2.0.2 requires (§6)."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="PSWriteHTML", Scope="AllUsers")
    entry = [m for m in t.state["installed_modules"] if m["Name"] == "PSWriteHTML"][0]
    assert entry["InstalledLocation"] == \
        "/usr/local/share/powershell/Modules/PSWriteHTML/1.39.0"


def test_install_whatif_changes_nothing():
    """Install-Module supports ShouldProcess: -WhatIf installs nothing."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="2.0.2",
             WhatIf=True)
    assert installed(t) == ["1.2.5"]


def test_install_unknown_parameter_is_refused():
    """PowerShell binding: -Version is not an Install-Module parameter."""
    error = failure(tenant(), "Install-Module", Name="seppmail365cloud", Version="2.0.2")
    assert error.error_id == "NamedParameterNotFound"


# --- Get-InstalledModule ---------------------------------------------------------------------


def test_get_installed_module_hides_prereleases_without_allow_prerelease():
    """PowerShellGet: Get-InstalledModule -AllowPrerelease includes prereleases;
    without it an installed p2 (§0) is not listed."""
    t = tenant(trusted=True)
    t.invoke("Install-Module", Name="seppmail365cloud", RequiredVersion="1.3.0-preview2",
             AllowPrerelease=True)
    assert versions(t.invoke("Get-InstalledModule", Name="seppmail365cloud")) == ["1.2.5"]
    assert versions(t.invoke("Get-InstalledModule", Name="seppmail365cloud",
                             AllowPrerelease=True)) == ["1.3.0-preview2"]


def test_get_installed_module_of_a_missing_module_is_no_match():
    """PackageManagement's NoMatchFound for a name that is not installed (the
    clean scenario has no seppmail365cloud)."""
    error = failure(tenant("clean"), "Get-InstalledModule", Name="seppmail365cloud")
    assert error.message == ("No match was found for the specified search criteria and"
                             " module names 'seppmail365cloud'.")
    assert error.error_id == ("NoMatchFound,Microsoft.PowerShell.PackageManagement"
                              ".Cmdlets.GetPackage")


def test_get_installed_module_lists_newest_of_each_module():
    """Without -Name: every installed module, newest version of each."""
    found = tenant().invoke("Get-InstalledModule")
    assert [(f["Name"], f["Version"]) for f in found] == [
        ("ExchangeOnlineManagement", "3.9.0"), ("seppmail365cloud", "1.2.5")]


# --- Import-Module / Get-Module ----------------------------------------------------------------


def test_import_module_loads_the_highest_installed_version():
    """Import-Module without -RequiredVersion: the highest System.Version."""
    t = tenant()
    t.invoke("Connect-ExchangeOnline", Organization="contoso.onmicrosoft.com",
             Device=True)
    gallery.install(t, "seppmail365cloud", required_version="1.3.0-preview1",
                    allow_prerelease=True, force=True)
    t.invoke("Import-Module", Name="seppmail365cloud")
    assert t.imported_module == "1.3.0-preview1"
    loaded = t.invoke("Get-Module", Name="seppmail365cloud")
    assert [(m["Version"], m["PrivateData"]["PSData"]["Prerelease"]) for m in loaded] \
        == [("1.3.0", "preview1")]
    assert "New-SC365Connectors" in loaded[0]["ExportedCommands"]


def test_import_module_required_version_is_a_system_version():
    """-RequiredVersion of Import-Module cannot hold a prerelease label."""
    t = tenant()
    error = failure(t, "Import-Module", Name="seppmail365cloud",
                    RequiredVersion="1.3.0-preview1")
    assert error.error_id == ("ParameterArgumentTransformationError,"
                              "Microsoft.PowerShell.Commands.ImportModuleCommand")
    t.invoke("Import-Module", Name="seppmail365cloud", RequiredVersion="1.2.5")
    assert t.imported_module == "1.2.5"


def test_import_of_a_module_that_is_not_installed_is_the_real_error():
    """PowerShell's Modules_ModuleNotFound / Modules_ModuleWithVersionNotFound."""
    error = failure(tenant("clean"), "Import-Module", Name="seppmail365cloud")
    assert error.message == ("The specified module 'seppmail365cloud' was not loaded"
                             " because no valid module file was found in any module"
                             " directory.")
    assert error.error_id == ("Modules_ModuleNotFound,"
                              "Microsoft.PowerShell.Commands.ImportModuleCommand")
    error = failure(tenant(), "Import-Module", Name="seppmail365cloud",
                    RequiredVersion="2.0.2")
    assert error.message == ("The specified module 'seppmail365cloud' with version"
                             " '2.0.2' was not loaded because no valid module file was"
                             " found in any module directory.")


def test_importing_the_loaded_version_again_runs_nothing_unless_force():
    """PowerShell skips a module that is already loaded; -Force reloads it and
    the 2.0.2 import checks run again (§6 test connector)."""
    t = tenant()
    t.invoke("Connect-ExchangeOnline", Organization="contoso.onmicrosoft.com",
             Device=True)
    gallery.install(t, "seppmail365cloud", required_version="2.0.2", force=True)
    t.invoke("Import-Module", Name="seppmail365cloud")
    count = len(t.state["changes"])
    t.invoke("Import-Module", Name="seppmail365cloud")
    assert len(t.state["changes"]) == count
    t.invoke("Import-Module", Name="seppmail365cloud", Force=True)
    assert len(t.state["changes"]) == count + 2


def test_get_module_list_available_shows_every_installed_version():
    """-ListAvailable: every installed version, newest first; without it only
    loaded modules (none before Import-Module)."""
    t = tenant()
    gallery.install(t, "seppmail365cloud", required_version="2.0.2", force=True)
    listed = t.invoke("Get-Module", Name="seppmail365cloud", ListAvailable=True)
    assert [m["Version"] for m in listed] == ["2.0.2", "1.2.5"]
    assert t.invoke("Get-Module", Name="seppmail365cloud") == []


def test_connecting_loads_exchange_online_management():
    """Connect-ExchangeOnline loads the EXO module (exchange-objects.md §7)."""
    t = tenant()
    assert t.invoke("Get-Module", Name="ExchangeOnlineManagement") == []
    t.invoke("Connect-ExchangeOnline", Organization="contoso.onmicrosoft.com",
             Device=True)
    assert [m["Version"] for m in t.invoke("Get-Module",
                                           Name="ExchangeOnlineManagement")] == ["3.9.0"]


def test_installed_versions_for_the_hello_are_newest_first():
    """docs/internals.md: versions.seppmail365cloud, newest first."""
    t = tenant()
    gallery.install(t, "seppmail365cloud", required_version="1.3.0-preview2",
                    allow_prerelease=True, force=True)
    gallery.install(t, "seppmail365cloud", required_version="2.0.2", force=True)
    assert gallery.installed_versions(t.state) == ["2.0.2", "1.3.0-preview2", "1.2.5"]
