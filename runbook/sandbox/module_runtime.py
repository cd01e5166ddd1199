"""What every simulated seppmail365cloud function shares: binding, errors, calls.

The real module is PowerShell script; these are the PowerShell behaviours its
functions rely on, made explicit for the sandbox:

- `$PSDefaultParameterValues['*:ErrorAction'] = 'Stop'` (set by every psm1
  version, seppmail365cloud.md §6 "The module default is ErrorAction Stop"):
  an Exchange error ends the function unless the call says
  `-ErrorAction SilentlyContinue`, and `Write-Error` ends it too. So a
  `Write-Error` is raised here like a `throw`, with PowerShell's record
  (`WriteErrorException,<function>`), and a `throw [System.Exception] "x"`
  is the record `OperationStopped` / `x`.
- `$InteractiveSession = [Environment]::UserInteractive`, which is true for
  any process a person starts (on Linux .NET always returns true), also for
  `pwsh -NonInteractive`. So the module takes its interactive branches and
  calls Read-Host, which the bridge's non-interactive host refuses: the call
  fails with PowerShell's NonInteractive error. The real module wraps
  Read-Host in `try {} catch {}` inside `Do {…} until ($?)`, so on a real
  host the refusal may instead leave the object untouched or loop until the
  bridge times out [I]; the sandbox surfaces it as the error.
  `state["host"]["user_interactive"] = false` (a Windows service) selects the
  module's non-interactive branches: "already exists" errors, and a hybrid
  setup that only warns.
- ShouldProcess: `-WhatIf` skips what the function wraps in ShouldProcess
  and nothing else (§1.2 "Only Remove and New are wrapped"); a
  ConfirmImpact High function asks unless `-Confirm:$false`, which a
  non-interactive host cannot answer. Both preferences flow into nested
  calls of the same module, as PowerShell's preference variables do.
- Exchange cmdlets do not inherit -WhatIf (§1.2 [I]).

Module state that lives in the PowerShell session and not in the cloud
(`$global:tenantAcceptedDomains`, whether ExchangeOnlineManagement is loaded)
is kept per `Tenant` object in `session(tenant)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import weakref
from dataclasses import dataclass, field
from typing import Callable

from .module_profile import Profile
from .openid_server import document_v1, tenants_of, unknown_tenant
from .registry import CmdletError
from .state import parse_time
from .tenant import bind_parameters

log = logging.getLogger(__name__)

NON_INTERACTIVE = ("PowerShell is in NonInteractive mode. Read and Prompt"
                   " functionality is not available.")
NOT_CONNECTED = ("You're not connected to Exchange Online - please connect prior"
                 " to using this CmdLet")
EXO_MODULE = "ExchangeOnlineManagement"

# --- errors as the module writes them ----------------------------------------------


def thrown(message: str) -> CmdletError:
    """`throw [System.Exception] "message"`: OperationStopped, id = the text."""
    return CmdletError(message, category="OperationStopped", error_id=message)


def write_error(function: str, message: str) -> CmdletError:
    """`Write-Error "message"` under ErrorAction Stop, as a function writes it."""
    return CmdletError(
        message, category="NotSpecified",
        error_id=f"Microsoft.PowerShell.Commands.WriteErrorException,{function}")


def rethrown(error: CmdletError) -> CmdletError:
    """`catch { throw [System.Exception] "Error: $($_.Exception.Message)" }`."""
    return thrown(f"Error: {error.message}")


def prompt_refused() -> CmdletError:
    """Read-Host (or a confirmation) in `pwsh -NonInteractive`."""
    return CmdletError(
        NON_INTERACTIVE, category="InvalidOperation",
        error_id="System.Management.Automation.PSInvalidOperationException")


def not_modelled(command: str, version: str) -> CmdletError:
    """A command the version exports but the sandbox does not simulate."""
    return CmdletError(
        f"The sandbox does not model {command} of seppmail365cloud {version};"
        " the runbook does not use it.", category="NotImplemented",
        error_id="RunbookSandboxNotModelled", target=command)


def null_method() -> CmdletError:
    """`$null.ToLower()` and the like: PowerShell's InvokeMethodOnNull."""
    return CmdletError("You cannot call a method on a null-valued expression.",
                       category="InvalidOperation", error_id="InvokeMethodOnNull")


def empty_argument(function: str, parameter: str) -> CmdletError:
    """A mandatory [string] parameter bound to '' or $null."""
    return CmdletError(
        f"Cannot bind argument to parameter '{parameter}' because it is an empty"
        " string.", category="InvalidData",
        error_id=f"ParameterArgumentValidationErrorEmptyStringNotAllowed,{function}",
        target=parameter)


# --- the PowerShell session --------------------------------------------------------


@dataclass
class ModuleSession:
    """What one PowerShell session holds beside the tenant (per Tenant object)."""

    loaded: set = field(default_factory=set)  # module names Import-Module loaded
    tenant_accepted_domains: list | None = None  # $global:tenantAcceptedDomains
    default_domain: str = ""  # $Script:ExODefaultDomain


_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def session(tenant) -> ModuleSession:
    found = _SESSIONS.get(tenant)
    if found is None:
        found = _SESSIONS[tenant] = ModuleSession()
    return found


def exo_loaded(tenant) -> bool:
    """Connect-ExchangeOnline loads the module; so does Import-Module."""
    return tenant.connection is not None or EXO_MODULE.lower() in session(tenant).loaded


def interactive(tenant) -> bool:
    return bool(tenant.state.get("host", {}).get("user_interactive", True))


def installed_modules(state: dict, name: str) -> list[dict]:
    """The `installed_modules` entries of one module name (any case)."""
    return [m for m in state.get("installed_modules", [])
            if m["Name"].lower() == name.lower()]


# --- PowerShell value semantics ----------------------------------------------------


def ps_date(value) -> str:
    """A DateTime in a double-quoted string: invariant `MM/dd/yyyy HH:mm:ss`.

    The sandbox machine's local time is UTC, so UTC is what prints.
    """
    moment = parse_time(value) if isinstance(value, str) else value
    return moment.strftime("%m/%d/%Y %H:%M:%S") if moment else ""


def ps_string(value) -> str:
    """`"$value"`: lists join with a space, $null is empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(ps_string(v) for v in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def ps_object(values: dict) -> str:
    """A PSCustomObject in a double-quoted string: `@{A=1; B=}`."""
    return "@{" + "; ".join(f"{k}={ps_string(v)}" for k, v in values.items()) + "}"


def like(text, pattern: str) -> bool:
    """`-like`: `*`, `?` and `[...]` character sets, case-insensitive."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            out.append("[" + re.escape(pattern[i + 1:end]) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.fullmatch("".join(out), ps_string(text), re.I | re.S) is not None


def matches(text, regex: str) -> bool:
    """`-match`: a case-insensitive regular expression search."""
    return re.search(regex, ps_string(text), re.I) is not None


def ne_true_is_truthy(values: list) -> bool:
    """`if ($objects.Enabled -ne $true)` for one object or several.

    One object: a scalar comparison. Several: `-ne` filters the array, and an
    array is true when it has two or more items, or one item that is true.
    """
    if len(values) == 1:
        return values[0] is not True
    remaining = [v for v in values if v is not True]
    return len(remaining) >= 2 or (len(remaining) == 1 and bool(remaining[0]))


def sha1_hex(text: str) -> str:
    """Get-SC365StringHash: SHA1 over the UTF-8 bytes, lower-case hex (§3.2)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# --- binding -----------------------------------------------------------------------

_KINDS = {"string": "string", "strings": "strings", "switch": "switch",
          "bool": "bool", "int": "int", "any": "any"}


def _validate_set(command: str, name: str, value, allowed: list[str]) -> None:
    items = value if isinstance(value, list) else [value]
    lowered = {a.lower() for a in allowed}
    for item in items:
        if item is not None and str(item).lower() not in lowered:
            raise CmdletError(
                f"Cannot validate argument on parameter '{name}'. The argument"
                f" \"{item}\" does not belong to the set \"{','.join(allowed)}\""
                " specified by the ValidateSet attribute. Supply an argument that"
                " is in the set and then try the command again.",
                category="InvalidData",
                error_id=f"ParameterArgumentValidationError,{command}", target=name)


def _check_mandatory(command: str, parameters: dict, bound: dict) -> None:
    missing = []
    for name, spec in parameters.items():
        if not spec.get("mandatory"):
            continue
        if name not in bound:
            missing.append(name)
        elif spec["type"] == "string" and bound[name] in (None, ""):
            raise empty_argument(command, name)
        elif spec["type"] == "strings" and bound[name] == []:
            raise CmdletError(
                f"Cannot bind argument to parameter '{name}' because it is an empty"
                " array.", category="InvalidData",
                error_id=f"ParameterArgumentValidationErrorEmptyArrayNotAllowed,"
                         f"{command}", target=name)
    if missing:
        raise CmdletError(
            "Cannot process command because of one or more missing mandatory"
            f" parameters: {' '.join(missing)}.", category="InvalidArgument",
            error_id=f"MissingMandatoryParameter,{command}", target=command)


def bind(command: str, spec: dict, params: dict) -> tuple[dict, set, bool, bool | None]:
    """Bind a request to a function's parameters as PowerShell does.

    Returns (bound values with defaults, names given, WhatIf, Confirm).
    Aliases match exactly; names and unambiguous prefixes through the shared
    binder (runbook.sandbox.tenant.bind_parameters); then ValidateSet, then
    the mandatory check, then defaults.
    """
    parameters = spec["parameters"]
    aliases = {a.lower(): n for n, s in parameters.items() for a in s.get("aliases", ())}
    renamed = {aliases.get(str(k).lower(), k): v
               for k, v in (params or {}).items()}
    kinds = {n: _KINDS[s["type"]] for n, s in parameters.items()}
    bound = bind_parameters(command, renamed, kinds,
                            should_process=spec["should_process"])
    whatif = bool(bound.pop("WhatIf", False))
    confirm = bound.pop("Confirm", None)
    for name, value in bound.items():
        if parameters[name].get("set"):
            _validate_set(command, name, value, parameters[name]["set"])
    _check_mandatory(command, parameters, bound)
    given = set(bound)
    for name, value_spec in parameters.items():
        if name not in bound:
            if "default" in value_spec:
                bound[name] = copy.deepcopy(value_spec["default"])
            elif value_spec["type"] == "switch":
                bound[name] = False
            else:
                bound[name] = None
    return bound, given, whatif, confirm


# --- one call of a module function -------------------------------------------------

Implementation = Callable[["Call"], list]
IMPLEMENTATIONS: dict[str, Implementation] = {}


def implements(command: str) -> Callable[[Implementation], Implementation]:
    """Register the sandbox body of one seppmail365cloud function."""

    def register(fn: Implementation) -> Implementation:
        IMPLEMENTATIONS[command.lower()] = fn
        return fn

    return register


class Call:
    """One invocation of a module function: its tenant, version and parameters."""

    def __init__(self, tenant, profile: Profile, command: str, params: dict, *,
                 whatif: bool = False, confirm: bool | None = None):
        spec = profile.cmdlet(command)
        self.tenant = tenant
        self.profile = profile
        self.command = command
        self.impact = spec.get("confirm_impact", "Medium")
        self.params, self.given, own_whatif, own_confirm = bind(command, spec, params)
        self.whatif = whatif or own_whatif
        self.confirm = own_confirm if own_confirm is not None else confirm

    def __getitem__(self, name: str):
        return self.params[name]

    def trait(self, name: str):
        return self.profile.trait(name)

    def warn(self, text: str) -> None:
        self.tenant.warn(text)

    @property
    def state(self) -> dict:
        return self.tenant.state

    @property
    def interactive(self) -> bool:
        return interactive(self.tenant)

    def prompt(self) -> None:
        """The Y/N question of the interactive branch: refused by the host."""
        raise prompt_refused()

    def should_process(self, target: str, action: str) -> bool:
        if self.whatif:
            log.debug("WhatIf: %s %s (%s)", action, target, self.command)
            return False
        if self.confirm is True or (self.confirm is None and self.impact == "High"):
            raise prompt_refused()
        return True

    def exo(self, command: str, *, silent: bool = False, quiet: bool = False,
            **params) -> list:
        """Call an Exchange cmdlet the way the module does.

        `silent` is `-ErrorAction SilentlyContinue` (an error gives nothing),
        `quiet` is `-WarningAction SilentlyContinue`.
        """
        kept = self.tenant.take_warnings() if quiet else []
        try:
            return self.tenant.invoke(command, **params)
        except CmdletError:
            if silent:
                return []
            raise
        finally:
            if quiet:
                self.tenant.take_warnings()
                for text in kept:
                    self.tenant.warn(text)

    def module(self, command: str, **params) -> list:
        """Call another function of the same module (preferences flow down)."""
        nested = Call(self.tenant, self.profile, command, params,
                      whatif=self.whatif, confirm=self.confirm)
        return IMPLEMENTATIONS[command.lower()](nested)


# --- shared steps ------------------------------------------------------------------


def routing_of(value: str | None) -> str:
    """`if ($routing -eq 'p') {'parallel'}; if ($routing -eq 'i') {'inline'}`."""
    text = (value or "").lower()
    return {"p": "parallel", "i": "inline"}.get(text, text)


def connection_status(call: Call, *, show_default: bool = False) -> tuple[bool, list]:
    """Test-SC365ConnectionStatus (§6): (connected, what it writes to output)."""
    tenant, state = call.tenant, call.tenant.state
    if not exo_loaded(tenant):
        call.warn("ExchangeOnlineManagement module not yet imported, importing ...")
        if not installed_modules(state, EXO_MODULE):
            raise thrown("ExchangeOnlineManagement module does not seem to be"
                         " installed! Use 'Install-Module ExchangeOnlineManagement'"
                         " to install.'")
        session(tenant).loaded.add(EXO_MODULE.lower())
        return False, []  # §6 "Returns false right after the import [I]"
    infos = call.exo("Get-ConnectionInformation")
    if not infos:
        return False, []
    if call.trait("accepted_domains_cache"):
        session(tenant).tenant_accepted_domains = call.exo("Get-AcceptedDomain",
                                                           silent=True)
    if parse_time(infos[-1]["TokenExpiryTimeUTC"]) <= tenant.now():
        call.warn("You're not actively connected to your Exchange Online"
                  " organization. TOKEN is EXPIRED")
        return False, []
    defaults = [d["DomainName"] for d in call.exo("Get-AcceptedDomain") if d["Default"]]
    session(tenant).default_domain = defaults[0] if defaults else ""
    return True, ([session(tenant).default_domain] if show_default else [])


def require_connection(call: Call, message: str = NOT_CONNECTED) -> None:
    connected, _ = connection_status(call)
    if not connected:
        raise thrown(message)


def accepted_domains(call: Call) -> list[dict]:
    """The accepted domains the version looks at: cached (1.3.0+) or fresh."""
    if call.trait("accepted_domains_cache"):
        return session(call.tenant).tenant_accepted_domains or []
    return call.exo("Get-AcceptedDomain")


def confirm_default_domain(call: Call, domain: str) -> bool:
    """Confirm-SC365TenantDefaultDomain (§1.4): True default, False accepted,
    error when the domain is not accepted."""
    domains = accepted_domains(call)
    names = [d["DomainName"] for d in domains]
    if domain is None or domain.lower() not in {n.lower() for n in names}:
        raise write_error(
            "Confirm-SC365TenantDefaultDomain",
            f"{ps_string(domain)} is not member of the connected tenant. Retry using"
            " only tenant-domains (Use CmdLet: Get-AcceptedDomain)")
    default = [d["DomainName"] for d in domains if d["Default"]]
    return bool(default) and domain.lower() == default[0].lower()


def tenant_id(call: Call, domain: str) -> str:
    """Get-SC365TenantId (§3.2): the tenant that owns `domain`.

    The real module GETs `https://login.windows.net/<domain>/.well-known/
    openid-configuration` and takes the 4th `/`-segment of token_endpoint; it
    uses no Exchange session. The sandbox asks the same data its OpenID
    discovery stand-in serves (runbook.sandbox.openid_server): this tenant
    and `state["other_tenants"]`; an unknown domain is that service's HTTP 400
    body, which Invoke-WebRequest turns into the error message.
    """
    if not domain:
        raise empty_argument("Get-SC365TenantID", "maildomain")
    entry = tenants_of(call.state).get(domain.strip().lower())
    if entry is None:
        raise CmdletError(
            json.dumps(unknown_tenant(domain, call.tenant.now())),
            category="InvalidOperation",
            error_id="WebCmdletWebResponseException,"
                     "Microsoft.PowerShell.Commands.InvokeWebRequestCommand",
            target=domain)
    document = document_v1(entry["tenant_id"], entry["region_scope"])
    return document["token_endpoint"].split("/")[3]


# --- DNS as the module's resolvers see it ------------------------------------------


def _records(state: dict) -> list[dict]:
    return state.get("dns", {}).get("records", [])


def _absolute(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def resolve(state: dict, name: str, kind: str = "A") -> list[str]:
    """Answers for `name`/`kind` from the sandbox DNS data (state["dns"]).

    The same records the sandbox DNS server serves (runbook.sandbox.dnsserver):
    CNAMEs are followed, and a name whose record is a SERVFAIL or TIMEOUT
    knob gives no answer, as Resolve-Dns does with errors silenced.
    """
    current = _absolute(name)
    for _ in range(8):
        here = [r for r in _records(state) if _absolute(r["name"]) == current]
        if any(r["type"] in ("SERVFAIL", "TIMEOUT") for r in here):
            return []
        wanted = [r["value"] for r in here if r["type"].upper() == kind.upper()]
        if wanted:
            return [_text(v) if kind.upper() == "TXT" else v for v in wanted]
        alias = [r["value"] for r in here if r["type"].upper() == "CNAME"]
        if not alias or kind.upper() == "CNAME":
            return []
        current = _absolute(alias[0])
    return []


def _text(value: str) -> str:
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', value)
    return "".join(parts) if parts else value


def mail_hosts(state: dict, domain: str) -> list[str]:
    """The domain's MX targets, best preference first, without the final dot."""
    found = []
    for value in resolve(state, domain, "MX"):
        preference, _, host = value.partition(" ")
        found.append((int(preference), host.strip().rstrip(".")))
    return [host for _, host in sorted(found, key=lambda item: item[0])]


def region_of_address(profile: Profile, addresses: list[str], kind: str) -> str | None:
    """§4 step 4: the region whose Gate/Mail list holds an address; last wins.

    The module tests the regions in a fixed order (ch, de, prv, then dev in
    2.0), each loop breaking at its first hit, so a later region overrides.
    """
    found = None
    for name in ("ch", "de", "prv", "dev"):
        region = profile.region(name)
        if region and any(a in region.get(f"IPv4{kind}IPs", []) for a in addresses):
            found = name
    return found

