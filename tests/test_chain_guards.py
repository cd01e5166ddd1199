"""The chain's guards around a run: one run per tenant, a step writes only into
its own run's folder, Ctrl-C leaves a sealed record (issues 8 and 10)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from runbook import chain, cli, notebook, params
from runbook.audit import RunRecord, verify
from runbook.batch import TenantBusy
from runbook.params import ParameterError
from runbook.sandbox import scenarios

pytestmark = pytest.mark.slow

DECLARED = scenarios.declared("legacy-inline")
HOLD_LOCK = """
import sys, time
from runbook.batch import acquire_tenant_lock
with acquire_tenant_lock(sys.argv[1], "contoso") as lock:
    lock.attach(sys.argv[2])
    print("held", flush=True)
    time.sleep(60)
"""


def _params(state_file, **extra):
    return params.validate(**DECLARED, sandbox_state=str(state_file),
                           wait_minutes=1.0, poll_seconds=0.5, **extra)


def test_a_second_run_on_a_busy_tenant_is_refused_naming_the_first(
        make_tenant, reports, tmp_path):
    first = reports / "contoso" / "20261204T100000Z-0001"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(reports), str(first)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(TenantBusy) as caught:
            chain.run(_params(make_tenant("legacy-inline"), confirm=True),
                      reports_dir=reports, progress=lambda *_: None)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert caught.value.run_dir == str(first)
    assert str(first) in str(caught.value)
    assert [p.name for p in (reports / "contoso").iterdir()] == [".lock"]


def _first_step_record(reports, state_file, tenant="contoso"):
    record = RunRecord.create(reports, tenant, parameters={"tenant": tenant})
    record.update_run(sandbox_state=str(state_file))
    return record


def test_a_step_refuses_a_run_folder_of_another_tenant(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    other = _first_step_record(reports, state_file, tenant="woodgrove")
    before = (other.path / "events.jsonl").read_bytes()
    with pytest.raises(ParameterError) as caught:
        notebook.open_step("03-cleanup", dict(
            DECLARED, sandbox_state=str(state_file), run_dir=str(other.path),
            confirm=True))
    assert caught.value.name == "run_dir"
    assert caught.value.allowed.startswith("a run folder of tenant 'contoso' made by "
                                           "the runbook")
    assert (other.path / "events.jsonl").read_bytes() == before


def test_a_step_refuses_a_run_folder_outside_the_reports_folder(make_tenant, reports,
                                                                 tmp_path):
    state_file = make_tenant("legacy-inline")
    fake = tmp_path / "elsewhere" / "contoso" / "20261204T100000Z-0002"
    fake.mkdir(parents=True)
    (fake / "run.json").write_text(json.dumps({"tenant": "contoso"}))
    (fake / "events.jsonl").write_text("")
    with pytest.raises(ParameterError) as caught:
        notebook.open_step("01-prerequisites", dict(
            DECLARED, sandbox_state=str(state_file), run_dir=str(fake)))
    assert caught.value.name == "run_dir"
    assert (fake / "events.jsonl").read_text() == ""


def test_a_folder_that_only_looks_like_a_run_is_refused(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    fake = reports / "contoso" / "20261204T100000Z-0003"
    fake.mkdir(parents=True)
    (fake / "run.json").write_text(json.dumps({"tenant": "contoso"}))
    (fake / "events.jsonl").write_text("")
    with pytest.raises(ParameterError, match="run_dir="):
        notebook.open_step("01-prerequisites", dict(
            DECLARED, sandbox_state=str(state_file), run_dir=str(fake)))


def test_ctrl_c_in_a_step_seals_the_record_as_cancelled_and_resume_finishes_it(
        make_tenant, reports, monkeypatch):
    state_file = make_tenant("legacy-inline", propagation_delay_s=1)
    real_step = chain._run_step

    def interrupted(record, p, step, progress, extra=None, *, kernel=None):
        if step == "02-install-module":
            record.step_started(step, f"notebooks/{step}.ipynb")
            raise KeyboardInterrupt
        return real_step(record, p, step, progress, extra, kernel=kernel)

    monkeypatch.setattr(chain, "_run_step", interrupted)
    said = []
    with pytest.raises(KeyboardInterrupt):
        chain.run(_params(state_file, confirm=True), reports_dir=reports,
                  progress=said.append)
    [folder] = [p for p in (reports / "contoso").iterdir() if p.is_dir()]
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "cancelled"
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("01-prerequisites", "succeeded"), ("02-install-module", "failed")]
    assert run["steps"][1]["error"]["ename"] == "KeyboardInterrupt"
    assert verify(folder).ok
    assert said[-1].startswith(f"run cancelled: {folder}")
    assert not (reports / "contoso" / ".lock").exists()

    # The README's `runbook resume reports/<tenant>/<run-id>`, a relative path:
    # the kernels run in notebooks/, so every path must reach them absolute.
    monkeypatch.setattr(chain, "_run_step", real_step)
    monkeypatch.chdir(reports.parent)
    monkeypatch.delenv("RUNBOOK_REPORTS_DIR")
    assert cli.main(["resume", str(folder.relative_to(reports.parent))]) == 0
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "succeeded", run["steps"]
    assert verify(folder).ok


def test_a_run_into_a_relative_reports_folder_succeeds(make_tenant, tmp_path,
                                                        monkeypatch):
    state_file = make_tenant("legacy-inline")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNBOOK_REPORTS_DIR", raising=False)
    argv = ["run", "--tenant", "contoso", "--domain", "contoso.ch", "--domain",
            "contoso-group.ch", "--region", "ch", "--routing", "inline",
            "--sandbox-state", state_file.name, "--reports", "relative-reports"]
    assert cli.main(argv) == 0
    [folder] = (tmp_path / "relative-reports" / "contoso").glob("2*")
    assert json.loads((folder / "run.json").read_text())["status"] == "planned"


def test_the_verdict_cell_shows_the_verdict_and_no_stray_value(make_tenant, reports,
                                                               tmp_path):
    import papermill

    from runbook.kernels import PAPERMILL_OPTIONS

    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(
        str(chain.notebooks_dir() / "01-prerequisites.ipynb"), str(out),
        parameters=dict(DECLARED, sandbox_state=str(make_tenant("legacy-inline"))),
        cwd=str(chain.notebooks_dir()), **PAPERMILL_OPTIONS)
    last = json.loads(out.read_text())["cells"][-1]
    kinds = [o["output_type"] for o in last["outputs"]]
    assert kinds == ["display_data"]
    assert "".join(last["outputs"][0]["data"]["text/markdown"]).startswith(
        "### Verdict: ✅ passed")


def test_a_run_records_the_scenario_its_sandbox_tenant_came_from(make_tenant, reports):
    state_file = make_tenant("legacy-parallel")
    argv = ["run", "--tenant", "fabrikam", "--domain", "fabrikam.com", "--region", "de",
            "--routing", "parallel", "--sandbox-state", str(state_file)]
    assert cli.main(argv) == 0
    [folder] = (reports / "fabrikam").glob("2*")
    run = json.loads((folder / "run.json").read_text())
    assert run["parameters"]["scenario"] == "legacy-parallel"


def test_a_kernels_own_output_goes_to_the_steps_log_not_the_console(
        make_tenant, reports, capfd, monkeypatch):
    """What ipykernel says on its stderr (here: the TCP warning of a kernel started
    the default way) lands in notebooks/<step>.kernel.log of the run, sealed
    with it; the engineer's console shows only the chain's own lines."""
    from runbook import kernels

    monkeypatch.setitem(chain.PAPERMILL_OPTIONS, "kernel_manager_class",
                        "runbook.tests_tcp_kernel.TcpLoggedKernelManager")
    module = type(sys)("runbook.tests_tcp_kernel")

    class TcpLoggedKernelManager(kernels.IpcKernelManager):
        transport = "tcp"
        ip = "127.0.0.1"

    module.TcpLoggedKernelManager = TcpLoggedKernelManager
    monkeypatch.setitem(sys.modules, "runbook.tests_tcp_kernel", module)
    p = _params(make_tenant("legacy-inline"))
    record = chain.run(p, reports_dir=reports, steps=("01-prerequisites",),
                       progress=lambda *_: None)
    log = record.path / "notebooks" / "01-prerequisites.kernel.log"
    assert "Kernel is running over TCP without encryption" in log.read_text()
    assert "Kernel is running over TCP" not in capfd.readouterr().err
    assert (log.stat().st_mode & 0o777) == 0o600
    assert verify(record.path).ok


def test_the_runbook_command_says_which_lines_are_warnings_and_nothing_else(
        make_tenant, reports):
    """The console of a confirmed run: the chain's progress, Exchange Online's
    warnings marked as such, no kernel chatter (that is in the kernel logs)."""
    from pathlib import Path

    command = Path(sys.executable).with_name("runbook")
    state_file = make_tenant("legacy-inline", propagation_delay_s=1)
    done = subprocess.run(
        [str(command), "run", "--tenant", "contoso", "--domain", "contoso.ch",
         "--domain", "contoso-group.ch", "--region", "ch", "--routing", "inline",
         "--sandbox-state", str(state_file), "--reports", str(reports),
         "--wait-minutes", "1", "--poll-seconds", "0.5", "--confirm"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "runbook: WARNING: Import-Module: You do not Trust the PowerShellGallery" \
        in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(line.startswith("runbook: WARNING: ") for line in lines), lines
    assert done.stdout.splitlines()[-1].startswith(str(reports / "contoso"))


def test_ctrl_c_while_the_run_is_being_sealed_waits_for_the_seal(
        make_tenant, reports, monkeypatch):
    # Finishing renders pages and the report before the seal: a Ctrl-C there
    # used to leave run.json "planned" with no run-finished event, a record
    # that verify failed and resume refused.
    state_file = make_tenant("legacy-inline")
    render = RunRecord._render_report

    def interrupted_render(self, report):
        os.kill(os.getpid(), signal.SIGINT)
        return render(self, report)

    monkeypatch.setattr(RunRecord, "_render_report", interrupted_render)
    with pytest.raises(KeyboardInterrupt):
        chain.run(_params(state_file), reports_dir=reports,
                  steps=("01-prerequisites",), progress=lambda *_: None)
    [folder] = [p for p in (reports / "contoso").iterdir() if p.is_dir()]
    assert json.loads((folder / "run.json").read_text())["status"] == "planned"
    assert [e["kind"] for e in RunRecord.open(folder).events()][-1] == \
        "run-finished"
    assert verify(folder).ok
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
