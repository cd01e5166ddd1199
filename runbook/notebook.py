"""What every step notebook does around its own work: open, show, conclude.

A notebook's second cell calls `open_step(...)` with its parameters; that
validates them, opens (or, run alone, creates) the run's audit record and a
sandbox tenant, starts the PowerShell session and connects. The last cell
calls `ctx.conclude(...)`, which records the verdict and raises `StepFailed`
when the step did not succeed, so papermill and nbval see the failure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from runbook import params as params_mod
from runbook.audit import RunRecord
from runbook.exchange import ExchangeOnline
from runbook.powershell import Session, pwsh_command, sandbox_command

log = logging.getLogger(__name__)

PASSED, FAILED, PLANNED = "succeeded", "failed", "planned"


class StepFailed(RuntimeError):
    """The step did not succeed; the message says why and what to do."""


def default_reports_dir() -> Path:
    """RUNBOOK_REPORTS_DIR, else `reports/` at the project root above the cwd."""
    if os.environ.get("RUNBOOK_REPORTS_DIR"):
        return Path(os.environ["RUNBOOK_REPORTS_DIR"])
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
    session: Session
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
        return status

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
    state = _sandbox_state(p, record)
    argv = sandbox_command(state) if p.backend == "sandbox" else pwsh_command()
    session = Session(argv, timeout=p.timeout_seconds)
    exo = ExchangeOnline(session, record=record, confirmed=p.confirm, step=step)
    try:
        connection = exo.connect(p.organization, app_id=p.app_id,
                                 certificate_path=p.certificate_path)
    except Exception:
        session.close()
        raise
    record.event("versions", step=step, **_versions(session))
    return StepContext(step=step, params=p, record=record, session=session, exo=exo,
                       connection=connection, owns_record=owns)


def _open_record(step: str, p: params_mod.RunParameters) -> tuple[RunRecord, bool]:
    if p.run_dir:
        return RunRecord.open(Path(p.run_dir)), False
    record = RunRecord.create(default_reports_dir(), p.tenant, parameters=p.as_dict(),
                              operator=p.operator or None, backend=p.backend,
                              sandbox_state=p.sandbox_state or None)
    record.step_started(step, f"{step}.ipynb")
    return record, True


def _sandbox_state(p: params_mod.RunParameters, record: RunRecord) -> str:
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


def _versions(session: Session) -> dict:
    versions = dict(session.versions)
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
