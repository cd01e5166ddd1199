"""One parameter model for the notebooks, the CLI and batch rows.

Values are checked here before any kernel starts, and again in each
notebook's first cell. Every rejection is a `ParameterError` that names the
parameter, the value and what is allowed. Nothing is guessed from strings:
a tenant ID or a ticket number that looks like a number stays text, and a
list stays a list.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from runbook import seppmail

BACKENDS = ("sandbox", "pwsh")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_APP_ID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[A-Za-z0-9]+)?$")
_OPERATOR = re.compile(r"^[\w .@'-]{1,80}$")

# The numeric parameters: default, lowest and highest allowed value.
NUMBERS = {"wait_minutes": (10.0, 0, 120), "poll_seconds": (15.0, 0.1, 600),
           "timeout_seconds": (300.0, 1, 3600)}


class ParameterError(ValueError):
    """A parameter value that is not allowed; carries name, value and what is allowed."""

    def __init__(self, name: str, value: object, allowed: str):
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"parameter {name}={value!r} is not allowed: {allowed}")


@dataclass(frozen=True)
class RunParameters:
    """The parameters every step notebook takes (see README, "Parameters")."""

    tenant: str
    domains: tuple[str, ...]
    region: str
    routing: str
    backend: str = "sandbox"
    sandbox_state: str = ""
    scenario: str = "legacy-inline"
    module_version: str = ""
    run_dir: str = ""
    confirm: bool = False
    tenant_id: str = ""
    app_id: str = ""
    certificate_path: str = ""
    operator: str = ""
    wait_minutes: float = 10.0
    poll_seconds: float = 15.0
    timeout_seconds: float = 300.0
    ascii_domains: tuple[str, ...] = field(default=(), compare=False)

    @property
    def organization(self) -> str:
        return f"{self.tenant}.onmicrosoft.com"

    @property
    def primary_domain(self) -> str:
        """The domain the connectors are built from: the first one given."""
        return self.ascii_domains[0]

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("ascii_domains")
        data["domains"] = list(self.domains)
        return data


NAMES = tuple(f.name for f in dataclasses.fields(RunParameters) if f.name != "ascii_domains")


def validate(**values) -> RunParameters:
    """Check every value and return the typed parameters, or raise ParameterError."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ParameterError(unknown[0], values[unknown[0]],
                             f"known parameters are {', '.join(NAMES)}")
    for required in ("tenant", "domains", "region", "routing"):
        if required not in values:
            raise ParameterError(required, None, "this parameter is required")

    tenant = _text("tenant", values["tenant"])
    if not _TENANT.match(tenant):
        raise ParameterError("tenant", tenant, "the <name> of <name>.onmicrosoft.com: "
                             "lower-case letters, digits and '-', at most 63 characters")
    domains, ascii_domains = _domains(values["domains"])
    region = _choice("region", values["region"], seppmail.REGIONS)
    routing = _choice("routing", values["routing"], seppmail.ROUTING_MODES)
    backend = _choice("backend", values.get("backend", "sandbox"), BACKENDS)

    checked = dict(tenant=tenant, domains=domains, ascii_domains=ascii_domains,
                   region=region, routing=routing, backend=backend)
    checked["confirm"] = _bool("confirm", values.get("confirm", False))
    for name in ("sandbox_state", "run_dir", "certificate_path"):
        checked[name] = _path_text(name, values.get(name, ""))
    checked["scenario"] = _scenario(values.get("scenario", "legacy-inline"))
    checked["module_version"] = _optional_match(
        "module_version", values.get("module_version", ""), _VERSION,
        "a module version such as 2.0.2 or 1.3.0-preview1, or empty for the newest")
    checked["tenant_id"] = _tenant_id(values.get("tenant_id", ""))
    checked["app_id"] = _optional_match("app_id", values.get("app_id", ""), _APP_ID,
                                        "an application (client) ID, a GUID")
    checked["operator"] = _optional_match("operator", values.get("operator", ""),
                                          _OPERATOR, "a person's name or login, "
                                          "at most 80 letters, digits, spaces or .@'-")
    for name, (default, _, _) in NUMBERS.items():
        checked[name] = check_number(name, values.get(name, default))
    if backend == "pwsh" and checked["certificate_path"] and not checked["app_id"]:
        raise ParameterError("app_id", "", "app-only login with a certificate needs app_id")
    return RunParameters(**checked)


def check_number(name: str, value: object) -> float:
    """One numeric parameter alone, e.g. a batch flag that applies to every row."""
    _, low, high = NUMBERS[name]
    return _number(name, value, low, high)


def sandbox_tenant(p: RunParameters) -> dict:
    """The sandbox state `runbook run` is given, read before its run folder is
    made (a batch row's is read by its own tenant process, and a file that is
    no state fails that tenant alone)."""
    from runbook.sandbox import state as state_mod

    try:
        return state_mod.load(p.sandbox_state)
    except state_mod.StateFileError as exc:
        raise ParameterError("sandbox_state", p.sandbox_state,
                             f"a sandbox state file (`runbook sandbox new SCENARIO "
                             f"FILE`); this one is {exc.reason}") from exc


def typed_number(text: str, unit: str, *, above_zero: bool = False,
                 at_most: float | None = None) -> float:
    """A number of `unit` typed on a command line: finite and not negative, or
    above 0, and at most `at_most`. ValueError says what was typed and what is
    allowed."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (above_zero and value == 0) \
            or (at_most is not None and value > at_most):
        allowed = f"{unit} above 0" if above_zero else f"{unit}, 0 or more"
        if at_most is not None:
            allowed += f" and at most {at_most:g}"
        raise ValueError(f"{text!r} is not a number of {allowed}")
    return value


def check_files(p: RunParameters) -> None:
    """The files a run reads exist, checked before its run folder is made.

    `runbook run` and every batch row call this; a notebook run alone may
    leave `sandbox_state` empty and gets a fresh tenant instead.
    """
    if p.backend == "sandbox":
        if not p.sandbox_state:
            raise ParameterError("sandbox_state", "", "a sandbox state file for "
                                 "the sandbox backend (`runbook sandbox new SCENARIO "
                                 "FILE`)")
        if not Path(p.sandbox_state).is_file():
            raise ParameterError("sandbox_state", p.sandbox_state, "an existing file")
    if p.certificate_path and not Path(p.certificate_path).is_file():
        raise ParameterError("certificate_path", p.certificate_path,
                             "an existing certificate file")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        # papermill's -p reads 0123 as the number 123; -r passes it as typed.
        raise ParameterError(name, value, f"text, not {type(value).__name__} (with "
                             f"papermill, pass text with -r {name} VALUE)")
    if any(ch in value for ch in "\r\n\x00"):
        raise ParameterError(name, value, "a single line of text")
    return value.strip()


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    text = _text(name, value)
    if text not in allowed:
        raise ParameterError(name, value, f"one of {', '.join(allowed)}")
    return text


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(name, value, "true or false (a boolean, not text)")
    return value


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, value, f"a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ParameterError(name, value, f"a number from {low:g} to {high:g}")
    return float(value)


def _optional_match(name: str, value: object, pattern: re.Pattern, allowed: str) -> str:
    text = _text(name, value)
    if text and not pattern.match(text):
        raise ParameterError(name, value, allowed)
    return text


def _tenant_id(value: object) -> str:
    text = _text("tenant_id", value)
    if not text:
        return ""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ParameterError("tenant_id", value, "the tenant ID, a GUID such as "
                             "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b") from None


def _domains(value: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(value, str):
        hint = ""
        if value.strip().startswith("["):
            # papermill's -p passes '["contoso.ch"]' as text; -y parses it as YAML.
            hint = "; with papermill, pass a list with -y domains '[\"contoso.ch\"]'"
        raise ParameterError("domains", value,
                             f"a list of domains, e.g. [\"contoso.ch\"]{hint}")
    if not isinstance(value, (list, tuple)) or not value:
        raise ParameterError("domains", value, "a non-empty list of domains")
    given, encoded = [], []
    for item in value:
        text = _text("domains", item)
        try:
            ascii_form = seppmail.ascii_domain(text)
        except seppmail.DomainNameError as exc:
            raise ParameterError("domains", item, f"{seppmail.DOMAIN_ALLOWED} (this "
                                 f"one: {exc.reason})") from None
        if ascii_form.endswith(".onmicrosoft.com"):
            raise ParameterError("domains", item, "a customer domain; "
                                 "*.onmicrosoft.com cannot be routed via SEPPmail.cloud")
        if ascii_form in encoded:
            raise ParameterError("domains", item, "each domain once (this one is repeated)")
        given.append(text)
        encoded.append(ascii_form)
    return tuple(given), tuple(encoded)


def _scenario(value: object) -> str:
    text = _text("scenario", value)
    if not re.match(r"^[a-z][a-z0-9-]{0,40}$", text):
        raise ParameterError("scenario", value, "a sandbox scenario name "
                             "(`runbook sandbox scenarios` lists them)")
    return text


def _path_text(name: str, value: object) -> str:
    # Absolute here: the notebooks run in another folder than the command
    # that named the path.
    text = _text(name, value)
    return os.path.abspath(Path(text).expanduser()) if text else ""
