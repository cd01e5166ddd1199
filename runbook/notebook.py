"""What every step notebook does around its own work: open, show, conclude.

A notebook's second cell calls `open_step(...)` with its parameters; that
validates them, opens (or, run alone, creates) the run's audit record and a
sandbox tenant, and reaches Exchange Online: inside a chain run through the
run's shared session (`runbook.powershell.broker`, its socket named in the
environment variable `SOCKET_ENV`), connected once by the chain; run alone
through a PowerShell session of its own, which it connects. The last cell
calls `ctx.conclude(...)`, which records the verdict and raises `StepFailed`
when the step did not succeed, so papermill and nbval see the failure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from runbook import params as params_mod
from runbook import seppmail
from runbook.audit import RunRecord
from runbook.exchange import ExchangeOnline
from runbook.powershell import Session, pwsh_command, sandbox_command
from runbook.powershell.broker import SOCKET_ENV, BrokerUnavailable, RemoteSession
from runbook.powershell.versions import Version

log = logging.getLogger(__name__)

PASSED, FAILED, PLANNED = "succeeded", "failed", "planned"


class Verdict(str):
    """A step's status as the last cell returns it: the verdict is on screen
    already, so the cell's value shows nothing (no stray ``'succeeded'``)."""

    def _ipython_display_(self) -> None:
        pass


class StepFailed(RuntimeError):
    """The step did not succeed; the message says why and what to do."""


def default_reports_dir() -> Path:
    """RUNBOOK_REPORTS_DIR, else `reports/` at the project root above the cwd."""
    if os.environ.get("RUNBOOK_REPORTS_DIR"):
        return Path(os.environ["RUNBOOK_REPORTS_DIR"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "runbook").is_dir():
            return folder / "reports"
    return here / "reports"


@dataclass
class StepContext:
    step: str
    params: params_mod.RunParameters
    record: RunRecord
    session: Session | RemoteSession
    exo: ExchangeOnline
    connection: dict
    owns_record: bool = False
    outcome: dict = field(default_factory=dict)

    @property
    def sandbox_state(self) -> str:
        return self.record.run().get("sandbox_state") or self.params.sandbox_state

    @property
    def dns_nameserver(self) -> str | None:
        """The sandbox's own DNS server; None means the system's resolver."""
        return self.session.hello.get("dns")

    def resolver(self):
        from runbook import dns

        return dns.make_resolver(self.dns_nameserver)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.record.event("check", step=self.step, name=name, ok=bool(ok), detail=detail)
        return ok

    def conclude(self, status: str, message: str) -> str:
        """Record the verdict; raise StepFailed unless the step passed or was planned."""
        self.outcome = {"status": status, "message": message}
        self.record.event("verdict", step=self.step, status=status, message=message)
        show_verdict(status, message)
        self.close()
        if status == FAILED:
            raise StepFailed(message)
        return Verdict(status)

    def close(self) -> None:
        self.session.close()
        if self.owns_record:
            self.record.step_finished(self.step, self.outcome.get("status", FAILED))
            self.record.finish(self.outcome.get("status", FAILED))

    def _repr_markdown_(self) -> str:
        p = self.params
        return (f"**{self.step}** on tenant `{p.tenant}` ({p.backend}), domains "
                f"{', '.join(f'`{d}`' for d in p.domains)}, {p.routing} routing, region "
                f"`{p.region}`; {'changes **confirmed**' if p.confirm else 'plan only'}; "
                f"record `{self.record.path}`")


def open_step(step: str, namespace: dict) -> StepContext:
    """Validate the parameters, open the record and the session, connect.

    `namespace` is the notebook's globals(): the parameters cell's names are
    taken from it, nothing else.
    """
    values = {name: namespace[name] for name in params_mod.NAMES if name in namespace}
    p = params_mod.validate(**values)
    if p.backend == "sandbox" and p.sandbox_state and not Path(p.sandbox_state).is_file():
        raise params_mod.ParameterError("sandbox_state", p.sandbox_state,
                                        "an existing sandbox state file "
                                        "(`runbook sandbox new SCENARIO FILE`)")
    record, owns = _open_record(step, p)
    session = _shared_session(p) or Session(child_argv(p, record),
                                            timeout=p.timeout_seconds)
    shared = isinstance(session, RemoteSession)
    exo = ExchangeOnline(session, record=record, confirmed=p.confirm, step=step)
    try:
        # The chain connected the shared session; confirming it is enough.
        connection = exo.connection() if shared else connect(exo, p)
        versions = _versions(session, exo if shared else None)
    except Exception:
        session.close()
        raise
    record.event("versions", step=step, **versions)
    return StepContext(step=step, params=p, record=record, session=session, exo=exo,
                       connection=connection, owns_record=owns)


def child_argv(p: params_mod.RunParameters, record: RunRecord) -> list[str]:
    """The PowerShell child of this run: the sandbox tenant's, or pwsh."""
    if p.backend == "sandbox":
        return sandbox_command(sandbox_state(p, record))
    return pwsh_command()


def connect(exo: ExchangeOnline, p: params_mod.RunParameters) -> dict:
    """Connect to the run's tenant; the connection information Exchange reports."""
    return exo.connect(p.organization, app_id=p.app_id,
                       certificate_path=p.certificate_path)


def _shared_session(p: params_mod.RunParameters) -> RemoteSession | None:
    """The chain's shared session, when this notebook runs inside a chain run."""
    path = os.environ.get(SOCKET_ENV)
    # Only a step of a run (run_dir given) joins it: a notebook run alone in
    # a process that happens to carry the variable connects on its own.
    if not path or not p.run_dir:
        return None
    try:
        return RemoteSession(path)
    except BrokerUnavailable as exc:
        log.warning("%s; this step opens a session of its own", exc)
        return None


def _open_record(step: str, p: params_mod.RunParameters) -> tuple[RunRecord, bool]:
    if p.run_dir:
        return open_run_dir(p), False
    record = RunRecord.create(default_reports_dir(), p.tenant, parameters=p.as_dict(),
                              operator=p.operator or None, backend=p.backend,
                              sandbox_state=p.sandbox_state or None)
    record.step_started(step, f"{step}.ipynb")
    return record, True


def open_run_dir(p: params_mod.RunParameters) -> RunRecord:
    """The record a step of a run writes into: a run folder of this tenant inside
    the reports folder, begun by the runbook. A path that points anywhere else
    (another tenant's record, a folder outside the reports) is refused before
    anything is written."""
    reports = default_reports_dir().resolve()
    allowed = (f"a run folder of tenant {p.tenant!r} made by the runbook, "
               f"{reports / p.tenant}/<run-id>")
    folder = Path(p.run_dir).resolve()
    if folder.parent != (reports / p.tenant).resolve():
        raise params_mod.ParameterError("run_dir", p.run_dir, allowed)
    try:
        record = RunRecord.open(folder)
        tenant = record.run().get("tenant")
        first = record.events()[:1]
    except (OSError, ValueError) as exc:
        raise params_mod.ParameterError("run_dir", p.run_dir, allowed) from exc
    if tenant != p.tenant or not first or first[0].get("kind") != "run-started":
        raise params_mod.ParameterError("run_dir", p.run_dir, allowed)
    return record


def sandbox_state(p: params_mod.RunParameters, record: RunRecord) -> str:
    """The sandbox tenant's state file; run alone without one, a fresh scenario."""
    if p.backend != "sandbox":
        return ""
    known = p.sandbox_state or record.run().get("sandbox_state")
    if known:
        return known
    from runbook.sandbox import scenarios, state as state_mod

    path = record.path.parent / f"{record.path.name}.sandbox.json"
    state_mod.save(path, scenarios.build(p.scenario))
    record.update_run(sandbox_state=str(path))
    return str(path)


def _versions(session, exo: ExchangeOnline | None = None) -> dict:
    """The child's versions from its hello, and ours.

    With `exo` (a shared session) the module versions are read again: the
    hello is as old as the child, and step 2 may have installed one since.
    """
    versions = dict(session.versions)
    if exo is not None:
        versions[seppmail.MODULE_NAME] = sorted(
            set(exo.installed_module_versions()), key=Version.parse, reverse=True)
    import runbook

    versions["runbook"] = runbook.__version__
    versions["host"] = session.host
    return versions


def show(obj) -> None:
    """Display in a notebook; print elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
            return
    except ImportError:
        pass
    print(obj)


def show_verdict(status: str, message: str) -> None:
    icon = {PASSED: "✅ passed", FAILED: "❌ failed", PLANNED: "📝 planned"}.get(status,
                                                                              status)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(f"### Verdict: {icon}\n\n{_escape_md(message)}"))
            return
    except ImportError:
        pass
    print(f"Verdict: {icon}\n{message}")


def _escape_md(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "  \n")
