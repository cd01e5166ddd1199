"""Batch runs over many tenants (runbook.batch, issue 8).

The tests marked slow execute notebooks; the others read files and take locks.

Most tests run the chain over fixture notebooks (written below): five tiny
steps that record a verdict, and, steered by the tenant's name, fail, hang
or kill their own tenant process. They exercise the batch machinery (one
process per tenant, time limits, crashes, locks, Ctrl-C, the summary) in
seconds; the migration itself is tested in test_chain.py, and one slow test
here runs real sandbox tenants through a batch.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from runbook import audit, batch, chain, seppmail
from runbook.batch import (BatchFileError, Rejected, TenantBusy, TenantOutcome,
                           acquire_tenant_lock, read_rows, run_batch)

HEADER = "tenant,domains,region,routing,sandbox_state\n"
FIRST_TWO = ("01-prerequisites", "02-install-module")   # enough for most cases

# -- fixture notebooks ---------------------------------------------------------

FIXTURE_PARAMETERS = """tenant = "contoso"
domains = ["contoso.ch"]
region = "ch"
routing = "inline"
backend = "sandbox"
sandbox_state = ""
run_dir = ""
confirm = False
wait_minutes = 10.0
poll_seconds = 15.0
timeout_seconds = 300.0
"""

# What each fixture step does, by the tenant's name: hang* sleeps in step 2,
# crash* kills its own tenant process (the kernel's parent) in step 2, fail*
# fails step 1, plan* only plans even when confirmed; every step prints its
# kernel's transport.
FIXTURE_STEP = """import ipykernel.connect, os, signal, time
from runbook.audit import RunRecord
print("transport", ipykernel.connect.get_connection_info(unpack=True)["transport"])
if tenant.startswith("hang") and STEP == "02-install-module":
    time.sleep(600)
if tenant.startswith("crash") and STEP == "02-install-module":
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(600)
status = "failed" if tenant.startswith("fail") else (
    "succeeded" if confirm and not tenant.startswith("plan") else "planned")
RunRecord.open(run_dir).event("verdict", step=STEP, status=status,
                              message=f"fixture {STEP} {status}")
"""


def write_fixture_notebooks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for step in chain.STEPS:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                     "display_name": "Python 3"}
        parameters = nbformat.v4.new_code_cell(FIXTURE_PARAMETERS)
        parameters.metadata["tags"] = ["parameters"]
        nb.cells = [parameters,
                    nbformat.v4.new_code_cell(f"STEP = {step!r}\n" + FIXTURE_STEP)]
        nbformat.write(nb, folder / f"{step}.ipynb")
    return folder


@pytest.fixture
def fixture_notebooks(tmp_path, monkeypatch):
    folder = write_fixture_notebooks(tmp_path / "notebooks")
    monkeypatch.setenv("RUNBOOK_NOTEBOOKS", str(folder))
    return folder


def tenants_file(folder: Path, text: str, *, states=(), name="tenants.csv") -> Path:
    """A tenants file in `folder`, with an (unread) state file for each name."""
    folder.mkdir(parents=True, exist_ok=True)
    for state in states:
        (folder / state).write_text("{}\n")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def batch_processes(batch_id: str) -> list[int]:
    """Processes still carrying a token of this batch."""
    wanted = f"{batch.TOKEN_ENV}={batch_id}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(item.startswith(wanted) for item in environ):
                found.append(int(entry.name))
    return found


def summary_rows(result) -> list[dict]:
    with open(result.path / "summary.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- reading the tenants file --------------------------------------------------


def test_rows_keep_text_and_split_domains_on_semicolons_and_spaces(tmp_path):
    path = tenants_file(tmp_path, "tenant,domains,region,routing,sandbox_state,"
                        "operator\ncontoso,contoso.ch; contoso-group.ch,ch,inline,"
                        "a.json,0042\nfabrikam,fabrikam.com  fabrikam.de,de,parallel,"
                        "b.json,\n", states=["a.json", "b.json"])
    rows, rejected = read_rows(path)
    assert rejected == []
    assert [(r.line, r.tenant) for r in rows] == [(2, "contoso"), (3, "fabrikam")]
    assert rows[0].params.domains == ("contoso.ch", "contoso-group.ch")
    assert rows[1].params.domains == ("fabrikam.com", "fabrikam.de")
    assert rows[0].params.operator == "0042"         # not the number 42
    assert rows[1].params.operator == ""
    assert rows[0].params.confirm is False


def test_column_names_are_case_insensitive_and_in_any_order(tmp_path):
    path = tenants_file(tmp_path, " Routing ,TENANT,Region,domains,Sandbox_State,"
                        "tenant_id\ninline,contoso,ch,contoso.ch,a.json,"
                        "2C4F6A8E-1B3D-4E5F-9A7B-0C1D2E3F4A5B\n", states=["a.json"])
    rows, _ = read_rows(path)
    assert rows[0].params.routing == "inline" and rows[0].params.region == "ch"
    assert rows[0].params.tenant_id == "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b"


def test_unknown_column_rejects_the_whole_file_naming_it(tmp_path):
    path = tenants_file(tmp_path, "tenant,domains,region,routing,ticket\n"
                        "contoso,contoso.ch,ch,inline,4711\n")
    with pytest.raises(BatchFileError) as caught:
        read_rows(path)
    assert caught.value.reason.startswith("unknown column 'ticket' in line 1; the "
                                          "columns are tenant, domains, region")


def test_missing_required_column_rejects_the_whole_file(tmp_path):
    path = tenants_file(tmp_path, "tenant,domains,region\ncontoso,contoso.ch,ch\n")
    with pytest.raises(BatchFileError, match="lacks the required column 'routing'"):
        read_rows(path)


def test_repeated_column_rejects_the_whole_file(tmp_path):
    path = tenants_file(tmp_path, "tenant,domains,region,routing,region\n")
    with pytest.raises(BatchFileError, match="column 'region' appears twice"):
        read_rows(path)


def test_empty_and_undecodable_files_are_batch_file_errors(tmp_path):
    empty = tenants_file(tmp_path, "", name="empty.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "zürich,z.ch,ch,inline,a\n".encode("latin-1"))
    with pytest.raises(BatchFileError, match="empty file"):
        read_rows(empty)
    with pytest.raises(BatchFileError, match="not UTF-8 text"):
        read_rows(latin)


def test_bad_row_is_rejected_with_its_line_and_reason_and_the_others_stay(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n"
                        "fabrikam,fabrikam.com,xx,parallel,b.json\n"
                        "tailspin,tailspin.ch,ch,inline,c.json\n",
                        states=["a.json", "b.json", "c.json"])
    rows, rejected = read_rows(path)
    assert [r.tenant for r in rows] == ["contoso", "tailspin"]
    assert rejected == [Rejected(3, "parameter region='xx' is not allowed: one of "
                                    + ", ".join(seppmail.REGIONS),
                                 "fabrikam")]


def test_second_row_of_a_tenant_is_rejected_naming_the_first_line(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n"
                        "contoso,contoso.ch,ch,parallel,b.json\n",
                        states=["a.json", "b.json"])
    rows, rejected = read_rows(path)
    assert [r.line for r in rows] == [2]
    assert rejected[0].line == 3
    assert rejected[0].reason == ("tenant contoso is already on line 2; two runs at "
                                  "once would work on one tenant")


def test_two_tenants_on_one_sandbox_state_file_are_refused(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n"
                        "fabrikam,fabrikam.com,de,parallel,a.json\n", states=["a.json"])
    _, rejected = read_rows(path)
    assert rejected[0].line == 3
    assert rejected[0].reason.startswith(f"sandbox_state {tmp_path / 'a.json'} is "
                                         "already on line 2")


def test_row_with_more_or_fewer_cells_than_the_header_is_rejected(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json,x\n"
                        "fabrikam,fabrikam.com,de\n", states=["a.json"])
    rows, rejected = read_rows(path)
    assert rows == []
    assert [(r.line, r.reason) for r in rejected] == [
        (2, "6 cells where the header has 5"), (3, "3 cells where the header has 5")]


def test_semicolon_separated_file_with_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftenant;domains;region;routing;sandbox_state\r\n"
                     "contoso;contoso.ch contoso-group.ch;ch;inline;a.json\r\n"
                     .encode("utf-8"))
    (tmp_path / "a.json").write_text("{}")
    rows, rejected = read_rows(path)
    assert rejected == []
    assert rows[0].params.domains == ("contoso.ch", "contoso-group.ch")


def test_relative_paths_are_taken_from_the_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "partner"
    path = tenants_file(folder, HEADER + "contoso,contoso.ch,ch,inline,a.json\n",
                        states=["a.json"])
    monkeypatch.chdir(tmp_path)
    rows, _ = read_rows(path)
    assert rows[0].params.sandbox_state == str(folder / "a.json")


def test_sandbox_row_without_an_existing_state_file_is_rejected(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,\n"
                        "fabrikam,fabrikam.com,de,parallel,nosuch.json\n")
    _, rejected = read_rows(path)
    assert [r.reason for r in rejected] == [
        "parameter sandbox_state='' is not allowed: a sandbox state file for the "
        "sandbox backend (`runbook sandbox new SCENARIO FILE`)",
        f"parameter sandbox_state='{tmp_path / 'nosuch.json'}' is not allowed: an "
        "existing file"]


def test_pwsh_rows_need_an_app_only_login(tmp_path):
    header = "tenant,domains,region,routing,backend,app_id,certificate_path\n"
    app = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    path = tenants_file(tmp_path, header + "contoso,contoso.ch,ch,inline,pwsh,,\n"
                        f"fabrikam,fabrikam.com,de,parallel,pwsh,{app},cert.pfx\n"
                        f"tailspin,tailspin.ch,ch,inline,pwsh,{app},nosuch.pfx\n",
                        states=["cert.pfx"])
    rows, rejected = read_rows(path)
    assert [r.tenant for r in rows] == ["fabrikam"]
    assert rows[0].params.certificate_path == str(tmp_path / "cert.pfx")
    assert [(r.line, r.reason.split(" is not allowed: ")[1]) for r in rejected] == [
        (2, "app_id and certificate_path for an unattended (app-only) login"),
        (4, "an existing certificate file")]


def test_blank_rows_are_skipped_and_line_numbers_stay_true(tmp_path):
    path = tenants_file(tmp_path, HEADER + "\n,,,,\ncontoso,contoso.ch,ch,inline,"
                        "a.json\n\nfabrikam,fabrikam.com,zz,parallel,b.json\n",
                        states=["a.json", "b.json"])
    rows, rejected = read_rows(path)
    assert [r.line for r in rows] == [4]
    assert [r.line for r in rejected] == [6]


def test_common_values_apply_to_every_row(tmp_path):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n",
                        states=["a.json"])
    rows, _ = read_rows(path, common={"wait_minutes": 1.5, "poll_seconds": 0.5})
    assert (rows[0].params.wait_minutes, rows[0].params.poll_seconds) == (1.5, 0.5)
    rows, rejected = read_rows(path, common={"wait_minutes": "soon"})
    assert rows == [] and rejected[0].reason.startswith(
        "parameter wait_minutes='soon' is not allowed: a number from 0 to 120")


# -- the tenant lock -----------------------------------------------------------


def test_lock_file_names_this_process_and_is_private(tmp_path):
    with acquire_tenant_lock(tmp_path, "contoso") as lock:
        info = json.loads(lock.path.read_text())
        assert lock.path == tmp_path / "contoso" / ".lock"
        assert info["pid"] == os.getpid() and info["run_dir"] is None
        assert oct(lock.path.stat().st_mode & 0o777) == "0o600"
        lock.attach(tmp_path / "contoso" / "run-1")
        assert json.loads(lock.path.read_text())["run_dir"] == str(
            tmp_path / "contoso" / "run-1")
    assert not lock.path.exists()


HOLD = """
import sys, time
from runbook.batch import acquire_tenant_lock
with acquire_tenant_lock(sys.argv[1], "contoso") as lock:
    lock.attach(sys.argv[2])
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_second_run_of_a_tenant_is_refused_naming_the_first_runs_folder(tmp_path):
    first_run = tmp_path / "contoso" / "20261204T101500Z-ab12"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path),
                               str(first_run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(TenantBusy) as caught:
            with acquire_tenant_lock(tmp_path, "contoso"):
                pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert caught.value.tenant == "contoso"
    assert caught.value.run_dir == str(first_run)
    assert caught.value.holder["pid"] == holder.pid
    assert str(first_run) in str(caught.value)
    with acquire_tenant_lock(tmp_path, "contoso"):     # free again once it ended
        pass


def _write_lock(tmp_path, **info) -> Path:
    path = tmp_path / "contoso" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return path


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _write_lock(tmp_path, pid=int(gone.stdout), pid_started=1,
                host=batch.socket.gethostname(), token="old")
    with acquire_tenant_lock(tmp_path, "contoso") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    # Our own pid, but a start time that is not ours: another process had it.
    _write_lock(tmp_path, pid=os.getpid(), pid_started=1,
                host=batch.socket.gethostname(), token="old")
    with acquire_tenant_lock(tmp_path, "contoso") as lock:
        assert json.loads(lock.path.read_text())["token"] == lock.token


def test_empty_lock_left_by_a_dead_writer_is_stale(tmp_path):
    _write_lock(tmp_path)
    (tmp_path / "contoso" / ".lock").write_text("")
    with acquire_tenant_lock(tmp_path, "contoso") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path, pid=1, pid_started=1, host="elsewhere.example",
                since="2026-12-04T09:00:00Z", run_dir=None, token="other")
    with pytest.raises(TenantBusy) as caught:
        with acquire_tenant_lock(tmp_path, "contoso"):
            pass
    assert "pid 1 on elsewhere.example since 2026-12-04T09:00:00Z" in str(caught.value)


def test_the_holding_thread_may_lock_again_and_releases_at_the_outer_end(tmp_path):
    with acquire_tenant_lock(tmp_path, "contoso") as outer:
        with acquire_tenant_lock(tmp_path, "contoso") as inner:
            assert inner is outer
        assert outer.path.exists()
    assert not outer.path.exists()


def test_another_thread_of_the_same_process_is_refused(tmp_path):
    refused = []

    def second():
        try:
            with acquire_tenant_lock(tmp_path, "contoso"):
                pass
        except TenantBusy as exc:
            refused.append(exc)

    with acquire_tenant_lock(tmp_path, "contoso") as lock:
        lock.attach(tmp_path / "contoso" / "run-1")
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=10)
    assert refused and refused[0].run_dir == str(tmp_path / "contoso" / "run-1")


# -- a mixed batch over fixture notebooks --------------------------------------


@pytest.fixture(scope="module")
def mixed_batch(tmp_path_factory):
    """One batch: a tenant that succeeds, one that fails, one that hangs past
    its time limit, one that crashes, one whose lock is held, one bad row."""
    folder = tmp_path_factory.mktemp("mixed")
    notebooks = write_fixture_notebooks(folder / "notebooks")
    reports = folder / "reports"
    path = tenants_file(folder, HEADER + "hang1,h.ch,ch,inline,h.json\n"
                        "alpha,a.ch,ch,inline,a.json\nfail1,f.ch,ch,inline,f.json\n"
                        "crash1,c.ch,ch,inline,c.json\nbusy1,b.ch,ch,inline,b.json\n"
                        "bad1,x.ch,ch,sideways,x.json\nplan1,p.ch,ch,inline,p.json\n",
                        states=["h.json", "a.json", "f.json", "c.json", "b.json",
                                "x.json", "p.json"])
    rows, rejected = read_rows(path)
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNBOOK_NOTEBOOKS", str(notebooks))
        # Where the tenants' own temp folders go (see test_..._temp_folders_...).
        (folder / "tmp").mkdir()
        patch.setattr(tempfile, "tempdir", str(folder / "tmp"))
        with acquire_tenant_lock(reports, "busy1") as lock:
            lock.attach(reports / "busy1" / "20261204T090000Z-0000")
            started = time.monotonic()
            result = run_batch(rows, workers=2, confirm=True, reports_dir=reports,
                               time_limit_s=12, rejected=rejected, steps=FIRST_TWO,
                               progress=lines.append)
            elapsed = time.monotonic() - started
    return result, {o.tenant: o for o in result.outcomes}, lines, elapsed


@pytest.mark.slow
def test_every_tenant_is_in_the_summary_once_in_file_order(mixed_batch):
    result, _, _, _ = mixed_batch
    rows = summary_rows(result)
    assert [(r["line"], r["tenant"], r["outcome"]) for r in rows] == [
        ("2", "hang1", "timed-out"), ("3", "alpha", "succeeded"),
        ("4", "fail1", "failed"), ("5", "crash1", "crashed"), ("6", "busy1", "busy"),
        ("7", "bad1", "rejected"), ("8", "plan1", "planned")]
    assert result.path.parent == result.path.parents[1] / "batches"
    assert not result.ok and not result.interrupted


@pytest.mark.slow
def test_succeeded_tenant_links_its_verified_run_folder(mixed_batch):
    result, outcomes, _, _ = mixed_batch
    alpha = outcomes["alpha"]
    row = summary_rows(result)[1]
    assert row["run_dir"] == os.path.relpath(alpha.run_dir, result.path)
    assert row["run_dir"].startswith("../../alpha/")
    assert (result.path / row["run_dir"] / "report.html").is_file()
    assert row["verified"] == "yes" and float(row["duration_s"]) > 0
    assert float(row["peak_memory_mb"]) > 20
    assert audit.RunRecord.open(Path(alpha.run_dir)).run()["status"] == "succeeded"
    page = (result.path / "summary.html").read_text()
    assert f'<a href="{row["run_dir"]}/report.html">' in page


@pytest.mark.slow
def test_failed_tenant_says_which_step_failed_and_why(mixed_batch):
    _, outcomes, _, _ = mixed_batch
    fail = outcomes["fail1"]
    assert fail.detail == "01-prerequisites failed: fixture 01-prerequisites failed"
    assert fail.verified is True


@pytest.mark.slow
def test_tenant_past_its_time_limit_is_stopped_and_its_record_closed(mixed_batch):
    result, outcomes, _, elapsed = mixed_batch
    hang = outcomes["hang1"]
    assert hang.detail == "stopped after its time limit of 12 s"
    assert 12 <= hang.duration_s < 20
    run = audit.RunRecord.open(Path(hang.run_dir)).run()
    assert run["status"] == "failed"
    assert [(s["name"], s["status"]) for s in run["steps"]] == [
        ("01-prerequisites", "succeeded"), ("02-install-module", "failed")]
    assert run["steps"][1]["error"]["ename"] == "timed-out"
    assert audit.verify(Path(hang.run_dir)).ok
    assert elapsed < 30          # the others did not wait for it


def test_killed_tenants_leave_no_temp_folders_behind(mixed_batch):
    # hang1 and crash1 were killed with their kernels and sandbox: the sockets
    # and connection files they made went with each tenant's own temp folder.
    result, outcomes, _, _ = mixed_batch
    assert outcomes["hang1"].outcome == "timed-out"
    assert list((Path(result.path).parents[1].parent / "tmp").iterdir()) == []


@pytest.mark.slow
def test_crashed_tenant_is_recorded_and_its_orphaned_kernel_stopped(mixed_batch):
    result, outcomes, _, _ = mixed_batch
    crash = outcomes["crash1"]
    assert crash.detail == ("the tenant process ended without a result (killed by "
                            "SIGKILL)")
    assert crash.verified is True
    assert audit.RunRecord.open(Path(crash.run_dir)).run()["status"] == "failed"
    assert batch_processes(result.batch_id) == []


@pytest.mark.slow
def test_busy_tenant_is_refused_naming_the_first_runs_folder(mixed_batch):
    result, outcomes, _, _ = mixed_batch
    busy = outcomes["busy1"]
    assert busy.run_dir is None
    assert busy.detail.startswith("tenant busy1 is busy: another run (pid "
                                  f"{os.getpid()} on ")
    assert busy.detail.endswith("busy1/20261204T090000Z-0000")
    assert list((result.path.parents[1] / "busy1").glob("*/run.json")) == []


@pytest.mark.slow
def test_confirmed_run_that_only_planned_is_no_success(mixed_batch):
    result, outcomes, _, _ = mixed_batch
    assert outcomes["plan1"].detail == ("01-prerequisites planned: fixture "
                                        "01-prerequisites planned")
    assert "planned" not in result.successes


@pytest.mark.slow
def test_rejected_row_is_listed_with_its_reason(mixed_batch):
    _, outcomes, _, _ = mixed_batch
    assert outcomes["bad1"].line == 7
    assert outcomes["bad1"].detail == ("parameter routing='sideways' is not allowed: "
                                       "one of inline, parallel")


@pytest.mark.slow
def test_progress_names_the_tenant_of_each_step(mixed_batch):
    _, _, lines, _ = mixed_batch
    assert "alpha: 01-prerequisites ..." in lines
    assert any(line.startswith("alpha: 02-install-module succeeded") for line in lines)
    assert any(line.startswith("hang1: timed-out (") for line in lines)


@pytest.mark.slow
def test_each_tenant_has_a_private_log(mixed_batch):
    result, outcomes, _, _ = mixed_batch
    log = result.path / outcomes["crash1"].log
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert "Executing notebook" in log.read_text()


@pytest.mark.slow
def test_chain_kernels_talk_over_ipc(mixed_batch):
    _, outcomes, _, _ = mixed_batch
    nb = json.loads((Path(outcomes["alpha"].run_dir) / "notebooks"
                     / "01-prerequisites.ipynb").read_text())
    # A stored stream output keeps its text as a list of lines.
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"]
                      for o in c.get("outputs", []))
    assert "transport ipc" in printed


# -- exit status, plans, interruption, Dask ------------------------------------


@pytest.mark.slow
def test_exit_status_is_zero_only_when_every_tenant_succeeded(tmp_path,
                                                              fixture_notebooks,
                                                              capsys):
    good = tenants_file(tmp_path, HEADER + "alpha,a.ch,ch,inline,a.json\n",
                        states=["a.json"], name="good.csv")
    bad = tenants_file(tmp_path, HEADER + "beta,b.ch,ch,inline,b.json\n"
                       "gamma,g.ch,ch,zigzag,g.json\n", states=["b.json", "g.json"],
                       name="bad.csv")
    reports = tmp_path / "reports"
    assert batch.main([str(good), "--confirm", "--reports", str(reports),
                       "--steps", ",".join(FIRST_TWO)]) == 0
    assert batch.main([str(bad), "--confirm", "--reports", str(reports),
                       "--steps", "01-prerequisites"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: parameter routing='zigzag' is not allowed" in err
    assert (reports / "beta").is_dir()                # the good row ran anyway


@pytest.mark.slow
def test_unconfirmed_batch_plans_and_counts_as_success(tmp_path, fixture_notebooks):
    path = tenants_file(tmp_path, HEADER + "alpha,a.ch,ch,inline,a.json\n",
                        states=["a.json"])
    rows, _ = read_rows(path)
    result = run_batch(rows, reports_dir=tmp_path / "reports", steps=FIRST_TWO,
                       progress=lambda *_: None)
    assert [o.outcome for o in result.outcomes] == ["planned"] and result.ok
    run = audit.RunRecord.open(Path(result.outcomes[0].run_dir)).run()
    assert [s["name"] for s in run["steps"]] == list(FIRST_TWO)


def test_bad_header_runs_nothing_and_exits_2(tmp_path, capsys):
    path = tenants_file(tmp_path, "tenant,domain,region,routing\n")
    assert batch.main([str(path), "--reports", str(tmp_path / "r")]) == 2
    assert "unknown column 'domain'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unknown_step_is_a_usage_error(tmp_path, capsys):
    path = tenants_file(tmp_path, HEADER)
    with pytest.raises(SystemExit) as caught:
        batch.main([str(path), "--steps", "01-prerequisites,06-party"])
    assert caught.value.code == 2
    assert "'06-party' is not a step" in capsys.readouterr().err


def test_scheduler_without_dask_executor_is_a_usage_error(tmp_path, capsys):
    path = tenants_file(tmp_path, HEADER)
    assert batch.main([str(path), "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    assert "--scheduler needs --executor dask" in capsys.readouterr().err


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.slow
def test_ctrl_c_stops_the_batch_leaves_verifiable_records_and_no_process(
        tmp_path, fixture_notebooks):
    path = tenants_file(tmp_path, HEADER + "hang1,a.ch,ch,inline,a.json\n"
                        "hang2,b.ch,ch,inline,b.json\nalpha,c.ch,ch,inline,c.json\n",
                        states=["a.json", "b.json", "c.json"])
    reports = tmp_path / "reports"
    runner = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "batch", str(path), "--workers", "2",
         "--confirm", "--reports", str(reports), "--steps",
         "01-prerequisites,02-install-module"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def hanging() -> bool:
        events = list(reports.glob("hang*/*/events.jsonl"))
        return len(events) == 2 and all("02-install-module" in e.read_text()
                                        for e in events)

    try:
        assert _wait_for(hanging, 60), "the tenants never reached their hang"
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130, output
    assert "interrupted: stopping every running tenant" in output
    folder = next(reports.glob("batches/*"))
    with open(folder / "summary.csv", newline="") as handle:
        rows = {r["tenant"]: r for r in csv.DictReader(handle)}
    assert {t: r["outcome"] for t, r in rows.items()} == {
        "hang1": "interrupted", "hang2": "interrupted", "alpha": "interrupted"}
    assert rows["alpha"]["detail"] == "the batch stopped before it"
    for tenant in ("hang1", "hang2"):
        run_dir = folder / rows[tenant]["run_dir"]
        assert audit.verify(run_dir).ok
        assert audit.RunRecord.open(run_dir).run()["status"] == "cancelled"
    assert batch_processes(folder.name) == []
    assert not list(reports.glob("*/.lock"))


@pytest.mark.slow
def test_dask_executor_runs_each_tenant_as_a_task(tmp_path, fixture_notebooks):
    distributed = pytest.importorskip("distributed")
    path = tenants_file(tmp_path, HEADER + "alpha,a.ch,ch,inline,a.json\n"
                        "fail1,b.ch,ch,inline,b.json\n", states=["a.json", "b.json"])
    rows, _ = read_rows(path)
    # One worker process with two threads; everything listens on loopback only.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = run_batch(rows, workers=2, confirm=True, executor="dask",
                           scheduler=cluster.scheduler_address, steps=FIRST_TWO[:1],
                           reports_dir=tmp_path / "reports", progress=lambda *_: None)
    assert [(o.tenant, o.outcome) for o in result.outcomes] == [
        ("alpha", "succeeded"), ("fail1", "failed")]
    assert all(o.verified for o in result.outcomes)
    assert len(summary_rows(result)) == 2


def test_local_executor_does_not_import_dask(tmp_path):
    code = ("import sys, runbook.batch, runbook.cli; "
            "print('dask' in sys.modules, 'distributed' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout == "False False\n"


# -- the summary ---------------------------------------------------------------


def test_summary_escapes_html_and_defuses_spreadsheet_formulas(tmp_path):
    folder = tmp_path / "batches" / "b1"
    folder.mkdir(parents=True)
    run_dir = tmp_path / "con toso" / "r1"
    outcomes = [
        TenantOutcome(2, "contoso", "failed", 1.25, str(run_dir), True, 180.5,
                      "=HYPERLINK(\"http://x\") <script>alert(1)</script>"),
        TenantOutcome(3, "fabrikam", "rejected", detail="-1 cells"),
    ]
    batch.write_summary(batch.BatchResult("b1", folder, outcomes))
    rows = list(csv.DictReader(open(folder / "summary.csv", newline="")))
    assert rows[0]["detail"].startswith("'=HYPERLINK")
    assert rows[1]["detail"] == "'-1 cells"
    assert rows[0]["run_dir"] == "../../con toso/r1"
    page = (folder / "summary.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<a href="../../con%20toso/r1/report.html">../../con toso/r1</a>' in page
    assert oct((folder / "summary.csv").stat().st_mode & 0o777) == "0o600"


# -- kernels over IPC ----------------------------------------------------------

LISTENING = """import os, json, ipykernel.connect
def listening_tcp_ports():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:        # 0A = LISTEN
                address, port = fields[1].split(":")
                found.append([address, int(port, 16)])
    return found
info = ipykernel.connect.get_connection_info(unpack=True)
print(json.dumps({"transport": info["transport"], "ip": info["ip"],
                  "channels": [info[k] for k in ("shell_port", "iopub_port",
                               "stdin_port", "control_port", "hb_port")],
                  "fork_pipe": get_ipython().kernel.iopub_thread._pipe_port,
                  "listening": listening_tcp_ports()}))
"""


def _kernel_report(tmp_path, **options) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [nbformat.v4.new_code_cell(LISTENING)]
    source, target = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(target), kernel_name="python3",
                               progress_bar=False, **options)
    return json.loads(nbformat.read(target, 4).cells[0].outputs[0]["text"])


LOOPBACK = "0100007F"    # 127.0.0.1 as /proc/net/tcp writes it


@pytest.mark.slow
def test_ipc_kernel_channels_use_no_tcp_port_and_its_folder_is_removed(tmp_path):
    options = dict(batch.PAPERMILL_OPTIONS)
    options.pop("kernel_name"), options.pop("progress_bar")
    report = _kernel_report(tmp_path, **options)
    assert report["transport"] == "ipc"
    # What is left is ipykernel's own pipe for output of forked subprocesses:
    # bound by the kernel itself on loopback, so it cannot collide either.
    assert report["listening"] == [[LOOPBACK, report["fork_pipe"]]]
    folder = Path(report["ip"]).parent
    assert folder.name.startswith("runbook-kernel-")
    assert not folder.exists()


@pytest.mark.slow
def test_default_kernel_listens_on_a_tcp_port_per_channel(tmp_path):
    # The comparison that shows the check above sees TCP channels where they are.
    report = _kernel_report(tmp_path)
    assert report["transport"] == "tcp"
    assert sorted(port for _, port in report["listening"]) == sorted(
        report["channels"] + [report["fork_pipe"]])


# -- real sandbox tenants ------------------------------------------------------


@pytest.mark.slow
def test_sandbox_tenants_migrate_in_a_batch_of_two_workers(tmp_path, make_tenant,
                                                          monkeypatch):
    from runbook.sandbox.server import CALL_LOG_ENV

    calls = tmp_path / "calls.jsonl"     # every sandbox child logs its requests
    monkeypatch.setenv(CALL_LOG_ENV, str(calls))
    contoso = make_tenant("legacy-inline", propagation_delay_s=0)
    fabrikam = make_tenant("legacy-parallel", propagation_delay_s=0)
    path = tenants_file(tmp_path, HEADER + f"contoso,contoso.ch;contoso-group.ch,ch,"
                        f"inline,{contoso}\nfabrikam,fabrikam.com,de,parallel,"
                        f"{fabrikam}\n")
    rows, rejected = read_rows(path, common={"wait_minutes": 1.0, "poll_seconds": 0.5})
    result = run_batch(rows, workers=2, confirm=True, reports_dir=tmp_path / "reports",
                       time_limit_s=600, progress=lambda *_: None)
    assert [(o.tenant, o.outcome) for o in result.outcomes] == [
        ("contoso", "succeeded"), ("fabrikam", "succeeded")], result.outcomes
    assert result.ok and all(o.verified for o in result.outcomes)
    # One PowerShell child per tenant run, connected once for its five steps.
    logged = [json.loads(line) for line in calls.read_text().splitlines()]
    connects = [c["pid"] for c in logged if c["command"] == "Connect-ExchangeOnline"]
    assert len(connects) == 2 and {c["pid"] for c in logged} == set(connects)


# -- bad input found by the hostile tester (issue 10, task H) ------------------


def test_named_pipe_or_folder_is_refused_without_waiting_or_reading(tmp_path):
    fifo = tmp_path / "tenants.csv"
    os.mkfifo(fifo)       # opening it for reading would wait for a writer
    for path in (fifo, tmp_path):
        with pytest.raises(BatchFileError) as caught:
            read_rows(path)
        assert str(caught.value) == f"{path}: not a regular file; give the CSV file " \
            "itself"


def test_file_over_the_size_limit_is_refused_and_one_at_the_limit_is_read(
        tmp_path, monkeypatch):
    text = HEADER + "contoso,contoso.ch,ch,inline,a.json\n"
    path = tenants_file(tmp_path, text, states=["a.json"])
    monkeypatch.setattr(batch, "MAX_CSV_BYTES", len(text))
    rows, _ = read_rows(path)
    assert [r.tenant for r in rows] == ["contoso"]
    monkeypatch.setattr(batch, "MAX_CSV_BYTES", len(text) - 1)
    with pytest.raises(BatchFileError, match=r"tenants.csv: larger than 0 MiB; split"):
        read_rows(path)


def test_common_flag_out_of_range_is_refused_once_before_any_row(tmp_path, capsys):
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n"
                        "fabrikam,fabrikam.com,de,parallel,b.json\n",
                        states=["a.json", "b.json"])
    code = batch.main([str(path), "--poll-seconds", "0", "--reports",
                       str(tmp_path / "r")])
    assert (code, capsys.readouterr().err) == (
        2, "runbook batch: parameter poll_seconds=0.0 is not allowed: a number from "
           "0.1 to 600\n")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--time-limit", "0", "argument --time-limit: '0' is not a number of minutes "
     "above 0"),
    ("--time-limit", "inf", "argument --time-limit: 'inf' is not a number of minutes "
     "above 0"),
    ("--steps", "02-install-module,01-prerequisites,02-install-module",
     "argument --steps: '02-install-module' is named twice; name each step once"),
])
def test_flag_value_is_a_usage_error_of_one_line(tmp_path, capsys, flag, value,
                                                 message):
    path = tenants_file(tmp_path, HEADER)
    with pytest.raises(SystemExit) as caught:
        batch.main([str(path), flag, value])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (f"runbook batch: {message} (see runbook batch "
                                       "--help)\n")


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(batch, "SCHEDULER_TIMEOUT_S", 1.0)
    path = tenants_file(tmp_path, HEADER + "contoso,contoso.ch,ch,inline,a.json\n",
                        states=["a.json"])
    code = batch.main([str(path), "--executor", "dask", "--scheduler",
                       "127.0.0.1:1", "--reports", str(tmp_path / "r")])
    assert (code, capsys.readouterr().err) == (
        2, "runbook batch: no Dask scheduler answered at 127.0.0.1:1 (Timed out "
           "trying to connect to tcp://127.0.0.1:1 after 1 s); start one there, or "
           "leave out --scheduler for a local cluster\n")
    # Refused before anything was made: no reports folder, no empty batch folder.
    assert not (tmp_path / "r").exists()


def test_a_tenant_killed_while_its_record_was_sealed_gets_its_seal_from_the_batch(
        tmp_path):
    # run.json already says how the run ended; the run-finished event is
    # missing, as when the time limit's SIGKILL lands inside finish().
    record = audit.RunRecord.create(tmp_path / "reports", "contoso",
                              parameters={"tenant": "contoso"}, backend="sandbox")
    record.update_run(status="succeeded")
    assert not audit.verify(record.path).ok
    batch._close_abandoned(record.path, TenantOutcome(
        2, "contoso", "timed-out", detail="past its time limit of 60 s"))
    assert audit.verify(record.path).ok
    assert record.run()["status"] == "succeeded"
    kinds = [e["kind"] for e in record.events()]
    assert kinds[-1] == "run-finished" and "run-abandoned" not in kinds
    batch._close_abandoned(record.path, TenantOutcome(2, "contoso", "timed-out"))
    assert [e["kind"] for e in record.events()] == kinds     # sealed once, not twice


def test_a_stopped_dask_batch_whose_workers_are_gone_gives_up_at_once(monkeypatch,
                                                                       tmp_path):
    # A terminal's Ctrl-C reaches a local cluster's workers too; their tasks never
    # report, and the batch used to wait for them for ever.
    import dask.distributed

    class Event:
        def __init__(self, name, client):
            self.was_set = False

        def set(self):
            self.was_set = True

    class Client:
        def __init__(self):
            self.cancelled = []

        def submit(self, fn, job, stop_name, pure, key):
            return key

        def nthreads(self):
            return {}                   # every worker died with the Ctrl-C

        def cancel(self, futures):
            self.cancelled.extend(futures)

    looks = []

    def finished(wait, flying):
        looks.append(sorted(flying))
        if len(looks) == 1:
            raise KeyboardInterrupt
        return set()

    monkeypatch.setattr(dask.distributed, "Event", Event)
    monkeypatch.setattr(batch, "_finished", finished)
    jobs = [batch._Job(line, {"tenant": name}, str(tmp_path), str(tmp_path / name),
                       f"token-{name}", 60.0)
            for line, name in ((2, "contoso"), (3, "fabrikam"), (4, "proseware"))]
    recorded, said, client = [], [], Client()
    # contoso's task had begun its run when its worker died: the runner closes
    # that record as the supervisor would have.
    real_submit = client.submit

    def submit(fn, job, stop_name, pure, key):
        if job.tenant == "contoso":
            started = audit.RunRecord.create(tmp_path, "contoso",
                                             parameters={"tenant": "contoso"},
                                             backend="sandbox")
            started.step_started("01-prerequisites",
                                 "notebooks/01-prerequisites.ipynb")
        return real_submit(fn, job, stop_name, pure, key)

    client.submit = submit
    assert batch._run_dask(jobs, 2, client, recorded.append, said.append) is True
    assert looks == [["runbook-token-contoso", "runbook-token-fabrikam"]]
    assert [(o.line, o.tenant, o.outcome, o.detail) for o in recorded] == [
        (2, "contoso", "interrupted",
         "stopped; its Dask worker was gone or did not report back"),
        (3, "fabrikam", "interrupted",
         "stopped; its Dask worker was gone or did not report back")]
    [run_dir] = (tmp_path / "contoso").iterdir()
    assert (recorded[0].run_dir, recorded[0].verified) == (str(run_dir), True)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    assert recorded[1].run_dir is None
    assert client.cancelled == ["runbook-token-contoso", "runbook-token-fabrikam"]
    assert said == ["interrupted: stopping every running tenant ...",
                    "contoso: interrupted", "fabrikam: interrupted"]


def test_a_local_clusters_processes_start_with_ctrl_c_ignored_and_the_batch_keeps_it():
    # Started while SIGINT is ignored, the workers keep ignoring it (POSIX keeps
    # an ignored signal across exec, and Python leaves it so): a terminal's
    # Ctrl-C then stops the batch through its stop event, not by killing them.
    with batch._workers_ignore_ctrl_c():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        child = subprocess.run([sys.executable, "-c", "import signal; print("
                                "signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
                               capture_output=True, text=True, timeout=30)
    assert child.stdout == "True\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
