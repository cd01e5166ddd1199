"""A simulated PowerShell Gallery and the PowerShellGet cmdlets of the sandbox.

`state["gallery"]` is what the gallery offers (`default_gallery()`);
`state["installed_modules"]` is what this machine has installed, one entry
per module folder: `{"Name", "Version", "InstalledDate", "Repository",
"InstalledLocation"}`. The cmdlets behave as PowerShellGet 2.2 (the one
`Install-Module` of PowerShell 7) and PowerShell's module commands do:

- Find-Module / Install-Module: the newest version wins; prereleases only
  with -AllowPrerelease, and a prerelease -RequiredVersion without it is the
  AllowPrereleaseRequiredToUsePrereleaseStringInVersion error; an unknown
  name or version is "No match was found for the specified search criteria
  and module name 'X'";
- Install-Module without -Force does not add a version next to an installed
  one: it warns (ModuleAlreadyInstalledSxS) unless -RequiredVersion names a
  version that is not installed, which then goes in side by side. Versions
  share a folder per System.Version, so 1.3.0 GA replaces 1.3.0-preview1;
- PSGallery is Untrusted by default: Install-Module then asks, which the
  bridge's non-interactive host cannot answer, unless -Force is given;
- Get-InstalledModule hides prereleases without -AllowPrerelease;
- Import-Module -RequiredVersion takes a System.Version (`1.3.0`, not
  `1.3.0-preview1`); without it the highest installed version loads. Loading
  seppmail365cloud runs the version's import-time checks
  (runbook.sandbox.module_import).

seppmail365cloud's versions and dates come from seppmail365cloud.md §0 and
the definition files of runbook.sandbox.module_profile; the dependencies
the module installs (§6) are listed with the versions §6 names. No network:
the gallery is this data.
"""

from __future__ import annotations

import copy
import logging
import os
from datetime import datetime

from .module_profile import MODULE_NAME, Version, load_profile, modelled_versions
from .module_runtime import (
    EXO_MODULE, exo_loaded, installed_modules, prompt_refused, session,
)
from .registry import CmdletError, cmdlet
from .state import iso
from .tenant import bind_parameters

log = logging.getLogger(__name__)

REPOSITORY = "PSGallery"
SOURCE_LOCATION = "https://www.powershellgallery.com/api/v2"
HOST_PWSH = "7.5.4"  # docs/internals.md hello; state["host"]["pwsh"] overrides
MODULE_ROOTS = {
    # Where PowerShell 7 on Linux keeps modules per scope.
    "CurrentUser": os.path.expanduser("~/.local/share/powershell/Modules"),
    "AllUsers": "/usr/local/share/powershell/Modules",
}

# §6: what the module versions install or require. The reference gives no
# publication dates for these, so the gallery leaves them unknown.
DEPENDENCIES = (
    {"Name": EXO_MODULE, "Version": "3.9.0", "Author": "Microsoft Corporation",
     "CompanyName": "Microsoft Corporation",
     "Description": "Exchange Online PowerShell V3 module (seppmail365cloud.md §6)"},
    {"Name": "DNSClient-PS", "Version": "1.1.1", "Author": None, "CompanyName": None,
     "Description": "DNS client module that seppmail365cloud 1.3.0+ installs (§6)"},
    {"Name": "PSWriteHTML", "Version": "1.39.0", "Author": None, "CompanyName": None,
     "Description": "HTML report module that seppmail365cloud 2.0.2 installs (§6)"},
)


# --- state -------------------------------------------------------------------------


def default_gallery() -> dict:
    """The `state["gallery"]` of a new sandbox: PSGallery, Untrusted."""
    modules = []
    for version in modelled_versions():
        data = load_profile(version).data
        modules.append({
            "Name": MODULE_NAME, "Version": version,
            "PublishedDate": data["PublishedDate"], "Description": data["Description"],
            "Author": data["Author"], "CompanyName": data["CompanyName"],
        })
    modules += [dict(d, PublishedDate=None) for d in DEPENDENCIES]
    return {
        "comment": "Simulated PowerShell Gallery (runbook.sandbox.gallery);"
                   " seppmail365cloud versions and dates: seppmail365cloud.md §0.",
        "repositories": [{"Name": REPOSITORY, "SourceLocation": SOURCE_LOCATION,
                          "InstallationPolicy": "Untrusted"}],
        "modules": modules,
    }


def installed_entry(name: str, version: str, when: datetime, *,
                    scope: str = "CurrentUser") -> dict:
    """One `state["installed_modules"]` entry, installed from PSGallery."""
    folder = os.path.join(MODULE_ROOTS[scope], name, Version.parse(version).base)
    return {"Name": name, "Version": version, "InstalledDate": iso(when),
            "Repository": REPOSITORY, "InstalledLocation": folder}


def default_installed_modules(when: datetime, *,
                              seppmail_version: str | None = "1.2.5") -> list[dict]:
    """ExchangeOnlineManagement 3.9.0 (the hello's version) and, for a
    pre-CBC tenant, the seppmail365cloud release it was set up with."""
    entries = [installed_entry(EXO_MODULE, "3.9.0", when)]
    if seppmail_version:
        entries.append(installed_entry(MODULE_NAME, seppmail_version, when))
    return entries


def installed_versions(state: dict, name: str = MODULE_NAME) -> list[str]:
    """Installed versions of a module, newest first (the hello's list)."""
    found = [m["Version"] for m in installed_modules(state, name)]
    return sorted(found, key=lambda v: Version.parse(v).key(), reverse=True)


def host_pwsh(state: dict) -> str:
    return str(state.get("host", {}).get("pwsh", HOST_PWSH))


def repository_trusted(state: dict, name: str = REPOSITORY) -> bool:
    for repo in state.get("gallery", {}).get("repositories", []):
        if repo["Name"].lower() == name.lower():
            return repo.get("InstallationPolicy", "Untrusted").lower() == "trusted"
    return False


# --- shared logic ------------------------------------------------------------------


def _no_match(name: str, command: str) -> CmdletError:
    operation = {"Find-Module": "FindPackage", "Install-Module": "InstallPackage"}
    return CmdletError(
        f"No match was found for the specified search criteria and module name"
        f" '{name}'. Try Get-PSRepository to see all available registered module"
        " repositories.", category="ObjectNotFound",
        error_id="NoMatchFoundForCriteria,Microsoft.PowerShell.PackageManagement"
                 f".Cmdlets.{operation.get(command, 'FindPackage')}", target=name)


def _validate_versions(command: str, names: list[str], bound: dict) -> None:
    """PowerShellGet's Validate-VersionParameters."""
    versions = [bound.get(k) for k in ("RequiredVersion", "MinimumVersion",
                                       "MaximumVersion")]
    uses = any(versions) or bound.get("AllVersions") or bound.get("AllowPrerelease")
    if uses and (len(names) != 1 or "*" in names[0]):
        raise CmdletError(
            "The RequiredVersion, MinimumVersion, MaximumVersion, AllVersions or"
            " AllowPrerelease parameters are allowed only when you specify a single"
            " name as the value of the Name parameter, without any wildcard"
            " characters.", category="InvalidArgument",
            error_id=f"VersionParametersAreAllowedOnlyWithSingleName,{command}")
    for value in filter(None, versions):
        try:
            parsed = Version.parse(value)
        except ValueError:
            raise CmdletError(
                f"Cannot convert value \"{value}\" to type \"System.Version\".",
                category="InvalidArgument",
                error_id=f"ParameterArgumentTransformationError,{command}",
                target=value) from None
        if parsed.prerelease and not bound.get("AllowPrerelease"):
            raise CmdletError(
                "The '-AllowPrerelease' parameter must be specified when using the"
                " Prerelease string in MinimumVersion, MaximumVersion, or"
                " RequiredVersion.", category="InvalidArgument",
                error_id="AllowPrereleaseRequiredToUsePrereleaseStringInVersion,"
                         f"{command}", target=value)


def _name_matches(pattern: str, name: str) -> bool:
    import fnmatch
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _select(entries: list[dict], bound: dict) -> list[dict]:
    """Filter by prerelease and version parameters; newest first."""
    keep = []
    for entry in entries:
        version = Version.parse(entry["Version"])
        if version.prerelease and not bound.get("AllowPrerelease"):
            continue
        if bound.get("RequiredVersion") and \
                version.key() != Version.parse(bound["RequiredVersion"]).key():
            continue
        if bound.get("MinimumVersion") and \
                version.key() < Version.parse(bound["MinimumVersion"]).key():
            continue
        if bound.get("MaximumVersion") and \
                Version.parse(bound["MaximumVersion"]).key() < version.key():
            continue
        keep.append(entry)
    return sorted(keep, key=lambda e: Version.parse(e["Version"]).key(), reverse=True)


def _gallery_entries(state: dict, pattern: str) -> list[dict]:
    return [m for m in state.get("gallery", {}).get("modules", [])
            if _name_matches(pattern, m["Name"])]


def _item(entry: dict, installed: dict | None = None) -> dict:
    """A PSRepositoryItemInfo as Find-Module and Get-InstalledModule write it."""
    version = Version.parse(entry["Version"])
    return {
        "Name": entry["Name"], "Version": entry["Version"], "Type": "Module",
        "Description": entry.get("Description"), "Author": entry.get("Author"),
        "CompanyName": entry.get("CompanyName"),
        "PublishedDate": entry.get("PublishedDate"),
        "InstalledDate": installed.get("InstalledDate") if installed else None,
        "UpdatedDate": None,
        "InstalledLocation": installed.get("InstalledLocation") if installed else None,
        "Repository": REPOSITORY, "RepositorySourceLocation": SOURCE_LOCATION,
        "PackageManagementProvider": "NuGet",
        "AdditionalMetadata": {
            "IsPrerelease": "true" if version.prerelease else "false"},
    }


def _gallery_record(state: dict, entry: dict) -> dict:
    for module in state.get("gallery", {}).get("modules", []):
        if module["Name"].lower() == entry["Name"].lower() and \
                Version.parse(module["Version"]).key() == \
                Version.parse(entry["Version"]).key():
            return module
    return {"Name": entry["Name"], "Version": entry["Version"]}


def install(tenant, name: str, *, required_version: str | None = None,
            allow_prerelease: bool = False, scope: str = "CurrentUser",
            force: bool = False, whatif: bool = False,
            command: str = "Install-Module") -> None:
    """Install-Module for one name, as PowerShellGet decides (see module doc)."""
    state = tenant.state
    bound = {"RequiredVersion": required_version, "AllowPrerelease": allow_prerelease}
    candidates = _select(_gallery_entries(state, name), bound)
    if not candidates:
        raise _no_match(name, command)
    target = candidates[0]
    installed = sorted(installed_modules(state, target["Name"]),
                       key=lambda e: Version.parse(e["Version"]).key(), reverse=True)
    if not force and installed and _already_installed(tenant, target, installed,
                                                      required_version):
        return
    if whatif:
        return
    if not force and not repository_trusted(state):
        # "You are installing the modules from an untrusted repository…" is a
        # ShouldContinue question; -NonInteractive cannot answer it.
        raise prompt_refused()
    _put(state, target, tenant.now(), scope)
    tenant.dirty = True
    log.info("installed %s %s (%s)", target["Name"], target["Version"], scope)


def _already_installed(tenant, target: dict, installed: list[dict],
                       required_version: str | None) -> bool:
    """Test-ModuleInstalled and the provider's warnings; True = nothing to do."""
    if required_version:
        wanted = Version.parse(required_version).key()
        same = [e for e in installed if Version.parse(e["Version"]).key() == wanted]
        if not same:
            return False
        base = Version.parse(same[0]["Version"]).base
        tenant.warn(f"Version '{base}' of module '{same[0]['Name']}' is already"
                    f" installed at '{same[0].get('InstalledLocation')}'. To reinstall"
                    f" this version '{base}', run Install-Module or Updated-Module"
                    " cmdlet with the -Force parameter.")
        return True
    newest = installed[0]
    if Version.parse(newest["Version"]).key() != Version.parse(target["Version"]).key():
        tenant.warn(f"Version '{newest['Version']}' of module '{newest['Name']}' is"
                    f" already installed at '{newest.get('InstalledLocation')}'. To"
                    f" install version '{target['Version']}', run Install-Module and"
                    " add the -Force parameter, this command will install version"
                    f" '{target['Version']}' side-by-side with version"
                    f" '{newest['Version']}'.")
    return True


def _put(state: dict, target: dict, when: datetime, scope: str) -> None:
    """Install into <root>/<Name>/<System.Version>: same folder, replaced."""
    base = Version.parse(target["Version"]).release_key()
    kept = [m for m in state.get("installed_modules", [])
            if not (m["Name"].lower() == target["Name"].lower()
                    and Version.parse(m["Version"]).release_key() == base)]
    kept.append(installed_entry(target["Name"], target["Version"], when, scope=scope))
    state["installed_modules"] = kept


def _not_modelled_parameters(command: str, bound: dict, names: tuple) -> None:
    for name in names:
        if bound.get(name) not in (None, False, [], ""):
            raise CmdletError(
                f"The sandbox does not model {command} -{name}.",
                category="NotImplemented", error_id="RunbookSandboxNotModelled",
                target=name)


# --- Find-Module -------------------------------------------------------------------

FIND_SPEC = {
    "Name": "strings", "RequiredVersion": "string", "MinimumVersion": "string",
    "MaximumVersion": "string", "AllVersions": "switch", "AllowPrerelease": "switch",
    "Repository": "strings", "IncludeDependencies": "switch", "Filter": "string",
    "Tag": "strings", "Includes": "strings", "Command": "strings",
    "DscResource": "strings", "RoleCapability": "strings", "Proxy": "any",
    "ProxyCredential": "any", "Credential": "any",
}
_FIND_UNMODELLED = ("IncludeDependencies", "Filter", "Tag", "Includes", "Command",
                    "DscResource", "RoleCapability", "Proxy", "ProxyCredential",
                    "Credential")


@cmdlet("Find-Module")
def find_module(tenant, params):
    """Newest matching version per name (all with -AllVersions); no EXO needed."""
    bound = bind_parameters("Find-Module", params or {}, FIND_SPEC)
    _not_modelled_parameters("Find-Module", bound, _FIND_UNMODELLED)
    _check_repository(tenant, bound)
    names = bound.get("Name") or ["*"]
    _validate_versions("Find-Module", names, bound)
    output = []
    for name in names:
        found = _select(_gallery_entries(tenant.state, name), bound)
        if not found and "*" not in name:
            raise _no_match(name, "Find-Module")
        if bound.get("AllVersions"):
            output += [_item(e) for e in found]
        else:
            output += [_item(e) for e in _newest_per_name(found)]
    return output


def _newest_per_name(entries: list[dict]) -> list[dict]:
    seen, output = set(), []
    for entry in entries:
        if entry["Name"].lower() not in seen:
            seen.add(entry["Name"].lower())
            output.append(entry)
    return output


def _check_repository(tenant, bound: dict) -> None:
    for repo in bound.get("Repository") or []:
        known = [r["Name"].lower() for r in tenant.state.get("gallery", {})
                 .get("repositories", [])]
        if repo.lower() not in known:
            raise CmdletError(
                f"Unable to find repository '{repo}'. Use Get-PSRepository to see all"
                " available repositories.", category="ObjectNotFound",
                error_id="SourceNotFound,Microsoft.PowerShell.PackageManagement"
                         ".Cmdlets.FindPackage", target=repo)


# --- Install-Module ----------------------------------------------------------------

INSTALL_SPEC = {
    "Name": "strings", "RequiredVersion": "string", "MinimumVersion": "string",
    "MaximumVersion": "string", "AllowPrerelease": "switch",
    "Scope": "enum:CurrentUser|AllUsers", "Force": "switch", "AllowClobber": "switch",
    "SkipPublisherCheck": "switch", "AcceptLicense": "switch", "PassThru": "switch",
    "Repository": "strings", "InputObject": "any", "Credential": "any",
    "Proxy": "any", "ProxyCredential": "any",
}
_INSTALL_UNMODELLED = ("MinimumVersion", "MaximumVersion", "InputObject", "Credential",
                       "Proxy", "ProxyCredential")


@cmdlet("Install-Module")
def install_module(tenant, params):
    """Install from the simulated PSGallery (see the module docstring)."""
    bound = bind_parameters("Install-Module", params or {}, INSTALL_SPEC,
                            required=("Name",), should_process=True)
    _not_modelled_parameters("Install-Module", bound, _INSTALL_UNMODELLED)
    _check_repository(tenant, bound)
    names = bound["Name"]
    _validate_versions("Install-Module", names, bound)
    output = []
    for name in names:
        install(tenant, name, required_version=bound.get("RequiredVersion"),
                allow_prerelease=bool(bound.get("AllowPrerelease")),
                scope=bound.get("Scope") or "CurrentUser",
                force=bool(bound.get("Force")), whatif=bool(bound.get("WhatIf")))
        if bound.get("PassThru") and not bound.get("WhatIf"):
            output += _installed_items(tenant.state, name, bound)[:1]
    return output


# --- Get-InstalledModule -----------------------------------------------------------

INSTALLED_SPEC = {
    "Name": "strings", "RequiredVersion": "string", "MinimumVersion": "string",
    "MaximumVersion": "string", "AllVersions": "switch", "AllowPrerelease": "switch",
}


@cmdlet("Get-InstalledModule")
def get_installed_module(tenant, params):
    """Installed modules, newest per name (all with -AllVersions)."""
    bound = bind_parameters("Get-InstalledModule", params or {}, INSTALLED_SPEC)
    names = bound.get("Name") or ["*"]
    _validate_versions("Get-InstalledModule", names, bound)
    output = []
    for name in names:
        found = _installed_items(tenant.state, name, bound)
        if not found and "*" not in name:
            raise CmdletError(
                "No match was found for the specified search criteria and module"
                f" names '{name}'.", category="ObjectNotFound",
                error_id="NoMatchFound,Microsoft.PowerShell.PackageManagement"
                         ".Cmdlets.GetPackage", target=name)
        if not bound.get("AllVersions"):
            found = [i for i in found if i is _first_of(found, i["Name"])]
        output += found
    return output


def _first_of(items: list[dict], name: str) -> dict:
    return next(i for i in items if i["Name"].lower() == name.lower())


def _installed_items(state: dict, pattern: str, bound: dict) -> list[dict]:
    entries = [m for m in state.get("installed_modules", [])
               if _name_matches(pattern, m["Name"]) and m.get("Repository")]
    return [_item(_gallery_record(state, e), e) for e in _select(entries, bound)]


# --- Import-Module -----------------------------------------------------------------

IMPORT_SPEC = {
    "Name": "strings", "RequiredVersion": "string", "MinimumVersion": "string",
    "MaximumVersion": "string", "Force": "switch", "PassThru": "switch",
    "Global": "switch", "DisableNameChecking": "switch", "NoClobber": "switch",
    "Prefix": "string", "Scope": "enum:Local|Global", "ArgumentList": "any",
}


def _system_version(value: str) -> tuple:
    """-RequiredVersion of Import-Module is a System.Version (2 to 4 numbers)."""
    parts = str(value).strip().split(".")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise CmdletError(
            "Cannot process argument transformation on parameter 'RequiredVersion'."
            f" Cannot convert value \"{value}\" to type \"System.Version\". Error:"
            f" \"The input string '{value}' was not in a correct format.\"",
            category="InvalidData",
            error_id="ParameterArgumentTransformationError,"
                     "Microsoft.PowerShell.Commands.ImportModuleCommand",
            target="RequiredVersion")
    return tuple(int(p) for p in parts) + (0,) * (4 - len(parts))


def _module_not_found(name: str, version: str | None) -> CmdletError:
    if version:
        return CmdletError(
            f"The specified module '{name}' with version '{version}' was not loaded"
            " because no valid module file was found in any module directory.",
            category="ResourceUnavailable",
            error_id="Modules_ModuleWithVersionNotFound,"
                     "Microsoft.PowerShell.Commands.ImportModuleCommand", target=name)
    return CmdletError(
        f"The specified module '{name}' was not loaded because no valid module file"
        " was found in any module directory.", category="ResourceUnavailable",
        error_id="Modules_ModuleNotFound,"
                 "Microsoft.PowerShell.Commands.ImportModuleCommand", target=name)


def choose_installed(state: dict, name: str, required: str | None = None,
                     minimum: str | None = None) -> dict | None:
    """The installed entry Import-Module would load: highest System.Version."""
    entries = installed_modules(state, name)
    if required:
        wanted = _system_version(required)
        entries = [e for e in entries
                   if Version.parse(e["Version"]).release_key() == wanted]
    if minimum:
        floor = _system_version(minimum)
        entries = [e for e in entries
                   if Version.parse(e["Version"]).release_key() >= floor]
    if not entries:
        return None
    return max(entries, key=lambda e: Version.parse(e["Version"]).release_key())


@cmdlet("Import-Module")
def import_module(tenant, params):
    """Load an installed module; seppmail365cloud runs its import checks (§6)."""
    from .module_import import import_version

    bound = bind_parameters("Import-Module", params or {}, IMPORT_SPEC,
                            required=("Name",))
    output = []
    for name in bound["Name"]:
        entry = choose_installed(tenant.state, name, bound.get("RequiredVersion"),
                                 bound.get("MinimumVersion"))
        if entry is None:
            raise _module_not_found(name, bound.get("RequiredVersion"))
        if entry["Name"].lower() == MODULE_NAME:
            import_version(tenant, entry, force=bool(bound.get("Force")))
        else:
            session(tenant).loaded.add(entry["Name"].lower())
        if bound.get("PassThru"):
            output.append(module_info(entry))
    return output


def module_info(entry: dict) -> dict:
    """A PSModuleInfo: Version is the System.Version, the prerelease label sits
    in PrivateData.PSData; ExportedCommands lists command names."""
    version = Version.parse(entry["Version"])
    folder = entry.get("InstalledLocation") or ""
    commands: list[str] = []
    description = None
    if entry["Name"].lower() == MODULE_NAME and entry["Version"] in modelled_versions():
        data = load_profile(entry["Version"]).data
        commands = list(data["FunctionsToExport"]) + list(data["AliasesToExport"])
        description = data["Description"]
    return {
        "Name": entry["Name"], "Version": version.base, "ModuleType": "Script",
        "Description": description, "ModuleBase": folder,
        "Path": os.path.join(folder, f"{entry['Name']}.psd1"),
        "PrivateData": {"PSData": {"Prerelease": version.prerelease or None}},
        "ExportedCommands": commands,
    }


# --- Get-Module --------------------------------------------------------------------

GET_MODULE_SPEC = {"Name": "strings", "ListAvailable": "switch", "All": "switch",
                   "Refresh": "switch", "FullyQualifiedName": "any"}


@cmdlet("Get-Module")
def get_module(tenant, params):
    """Loaded modules, or with -ListAvailable every installed one."""
    bound = bind_parameters("Get-Module", params or {}, GET_MODULE_SPEC)
    _not_modelled_parameters("Get-Module", bound, ("FullyQualifiedName",))
    patterns = bound.get("Name") or ["*"]
    if bound.get("ListAvailable"):
        # By name, each name's versions newest first, as the folders list them.
        entries = sorted(tenant.state.get("installed_modules", []),
                         key=lambda e: Version.parse(e["Version"]).release_key(),
                         reverse=True)
        entries = sorted(entries, key=lambda e: e["Name"].lower())
    else:
        entries = _loaded(tenant)
    return [module_info(e) for e in entries
            if any(_name_matches(p, e["Name"]) for p in patterns)]


def _loaded(tenant) -> list[dict]:
    state, loaded = tenant.state, []
    names = set(session(tenant).loaded)
    if exo_loaded(tenant):
        names.add(EXO_MODULE.lower())
    for name in sorted(names):
        if name == MODULE_NAME:
            continue
        entry = choose_installed(state, name)
        if entry is not None:
            loaded.append(entry)
    if tenant.imported_module:
        found = [e for e in installed_modules(state, MODULE_NAME)
                 if e["Version"] == tenant.imported_module]
        loaded.append(found[0] if found else {"Name": MODULE_NAME,
                                              "Version": tenant.imported_module})
    return copy.deepcopy(loaded)
