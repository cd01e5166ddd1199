"""The audit record: layout, permissions, redaction, the hash chain, verify."""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

import runbook
from runbook import audit
from runbook.audit import (InvalidName, NotARunFolder, RecordDamaged, RecordSealed,
                           RunRecord, UnsafePath, main_verify, redact, safe_filename,
                           verify)

SECRET = "Zq8-cert-pass-7731"
RULE = "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail"
RULE_FILE = f"backup/transport_rules/{safe_filename(RULE)}.json"
SMALL_RECORD_FILES = sorted([
    "run.json", "events.jsonl", "manifest.json", "report.html",
    "inventory/before.json", "inventory/after.json", RULE_FILE,
    "notebooks/01-prerequisites.ipynb", "notebooks/01-prerequisites.html",
])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def lines_of(folder: Path) -> list[bytes]:
    return (folder / "events.jsonl").read_bytes().split(b"\n")[:-1]


def write_lines(folder: Path, lines: list[bytes]) -> None:
    (folder / "events.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def executed_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"tenant": "contoso",
                                               "certificate_password": "p-in-meta"}}
    nb.cells = [nbformat.v4.new_code_cell(
        f"print('{SECRET}')", execution_count=1,
        outputs=[nbformat.v4.new_output("stream", text="ok\n")])]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def small_record(reports: Path) -> RunRecord:
    """A finished record with one of each kind of file, as the chain leaves it."""
    record = RunRecord.create(reports, "contoso", operator="alice",
                              parameters={"tenant": "contoso", "confirm": True,
                                          "certificate_password": "p-as-param"},
                              sandbox_state="/tmp/contoso.state.json")
    record.event("versions", pwsh="7.5.4", edition="Core",
                 ExchangeOnlineManagement="3.9.0", seppmail365cloud=["1.3.0"])
    record.step_started("prerequisites", "notebooks/01-prerequisites.ipynb")
    record.event("check", step="prerequisites", name="pwsh", ok=True, detail="7.5.4")
    record.write_json("inventory/before.json", {"taken_at": "2026-12-04T10:00:00Z",
                      "inbound_connectors": [], "outbound_connectors": [],
                      "transport_rules": [{"Name": RULE, "Priority": 0}]})
    record.write_json(RULE_FILE, {"Name": RULE, "Priority": 0})
    record.event("backup", file=RULE_FILE, objects=[{"kind": "transport_rule",
                                                     "name": RULE}])
    record.event("change-requested", id="c-1", command="Remove-TransportRule",
                 target=RULE, parameters={"Identity": RULE})
    record.event("change-result", id="c-1", command="Remove-TransportRule",
                 target=RULE, ok=True, errors=[], duration_ms=8.0)
    record.write_json("inventory/after.json", {"taken_at": "2026-12-04T10:01:00Z",
                      "inbound_connectors": [], "outbound_connectors": [],
                      "transport_rules": []})
    executed_notebook(record.path / "notebooks/01-prerequisites.ipynb")
    record.step_finished("prerequisites", "succeeded")
    record.finish("succeeded")
    return record


@pytest.fixture(autouse=True)
def cert_password(monkeypatch):
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", SECRET)
    monkeypatch.delenv("RUNBOOK_ACCESS_TOKEN", raising=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNBOOK_CERT_PASSWORD", SECRET)
        return small_record(tmp_path_factory.mktemp("reports")).path


@pytest.fixture
def finished(pristine, tmp_path) -> Path:
    """A private copy of the small finished record, free to tamper with."""
    return Path(shutil.copytree(pristine, tmp_path / "copy"))


@pytest.fixture
def running(tmp_path) -> RunRecord:
    record = RunRecord.create(tmp_path / "reports", "contoso", parameters={})
    for n in range(3):
        record.event("check", step="prerequisites", name=f"check {n}", ok=True)
    return record


# -- creating and opening ---------------------------------------------------


def test_create_makes_private_folder_named_by_tenant_and_utc_run_id(tmp_path):
    reports = tmp_path / "reports"
    record = RunRecord.create(reports, "contoso", parameters={})

    assert record.path.parent == reports / "contoso"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", record.path.name)
    stamp = datetime.strptime(record.path.name[:16], "%Y%m%dT%H%M%SZ")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    assert abs((now - stamp).total_seconds()) < 60
    for folder in (reports, reports / "contoso", record.path):
        assert mode(folder) == 0o700
    for name in ("run.json", "events.jsonl"):
        assert mode(record.path / name) == 0o600


def test_run_json_records_who_where_which_versions(tmp_path):
    record = RunRecord.create(tmp_path, "fabrikam", operator="bob",
                              parameters={"tenant": "fabrikam", "wait_minutes": 10.0},
                              sandbox_state="/tmp/f.state.json")
    run = record.run()

    assert run["tenant"] == "fabrikam"
    assert run["run_id"] == record.path.name
    assert run["backend"] == "sandbox"
    assert run["sandbox_state"] == "/tmp/f.state.json"
    assert run["status"] == "running"
    assert run["operator"] == "bob"
    assert run["host"] == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", run["started_at"])
    assert run["ended_at"] is None
    assert run["versions"]["runbook"] == runbook.__version__
    assert run["versions"]["python"] == platform.python_version()
    assert run["parameters"] == {"tenant": "fabrikam", "wait_minutes": 10.0}
    assert run["steps"] == []


def test_operator_defaults_to_the_login_name(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    assert record.run()["operator"] == getpass.getuser()


def test_a_pwsh_run_has_no_sandbox_state(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={}, backend="pwsh")
    assert "sandbox_state" not in record.run()
    assert record.run()["backend"] == "pwsh"


@pytest.mark.parametrize("tenant", ["../etc", "Contoso", "-contoso", "", "a" * 64,
                                    "con/toso", "con toso", "contoso.ch", None])
def test_tenant_must_be_one_safe_path_segment(tmp_path, tenant):
    with pytest.raises(InvalidName) as caught:
        RunRecord.create(tmp_path, tenant, parameters={})
    assert isinstance(caught.value, ValueError)
    assert repr(tenant) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_longest_allowed_tenant_name_is_63_characters(tmp_path):
    record = RunRecord.create(tmp_path, "a" * 63, parameters={})
    assert record.path.parent.name == "a" * 63


def test_given_run_id_is_used_once(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={}, run_id="batch-7")
    assert record.path == tmp_path / "contoso" / "batch-7"
    with pytest.raises(FileExistsError):
        RunRecord.create(tmp_path, "contoso", parameters={}, run_id="batch-7")
    with pytest.raises(InvalidName, match=r"'\.\.'"):
        RunRecord.create(tmp_path, "contoso", parameters={}, run_id="..")


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(InvalidName, match="'exchange'"):
        RunRecord.create(tmp_path, "contoso", parameters={}, backend="exchange")


def test_open_refuses_a_folder_that_is_not_a_record(tmp_path):
    with pytest.raises(NotARunFolder) as caught:
        RunRecord.open(tmp_path)
    assert isinstance(caught.value, FileNotFoundError)
    assert str(tmp_path) in str(caught.value)
    assert "run.json" in str(caught.value)


def test_open_gives_the_same_record(running):
    again = RunRecord.open(running.path)
    assert again.run() == running.run()
    assert again.events() == running.events()


# -- events ------------------------------------------------------------------


def test_first_event_is_run_started_chained_to_zeros(running):
    first = running.events()[0]
    assert first["seq"] == 1
    assert first["kind"] == "run-started"
    assert first["prev"] == "0" * 64
    assert first["data"]["tenant"] == "contoso"
    assert first["data"]["run_id"] == running.path.name


def test_each_line_hashes_itself_and_links_to_the_previous_line(running):
    lines = lines_of(running.path)
    assert len(lines) == 4
    for number, raw in enumerate(lines, 1):
        event = json.loads(raw)
        assert list(event) == ["seq", "at", "kind", "data", "prev", "hash"]
        assert event["seq"] == number
        expected_prev = sha(lines[number - 2]) if number > 1 else "0" * 64
        assert event["prev"] == expected_prev
        body = raw[: raw.rindex(b',"hash":')] + b"}"
        assert event["hash"] == sha(body)


def test_event_returns_what_was_stored(running):
    stored = running.event("inventory", which="before", file="inventory/before.json",
                           at=datetime(2026, 12, 4, 10, 15, 30, tzinfo=timezone.utc))
    assert stored == running.events()[-1]
    assert stored["seq"] == 5
    assert stored["data"]["at"] == "2026-12-04T10:15:30.000Z"


def test_event_data_has_secrets_removed(running):
    stored = running.event("diagnosis", password="hunter2",
                           nested=[{"AccessToken": "t", "keyword": "kept"}],
                           note=f"pfx opened with {SECRET}")
    assert stored["data"] == {"password": "[redacted]",
                              "nested": [{"AccessToken": "[redacted]",
                                          "keyword": "kept"}],
                              "note": "pfx opened with [redacted]"}
    raw = (running.path / "events.jsonl").read_bytes()
    assert b"hunter2" not in raw and SECRET.encode() not in raw


@pytest.mark.parametrize("kind", ["", "Check", "check result", "-x", "a/b"])
def test_event_kind_is_lower_case_words(running, kind):
    with pytest.raises(InvalidName):
        running.event(kind)


def test_appends_from_several_processes_keep_one_chain(running):
    child = ("import sys\nfrom runbook.audit import RunRecord\n"
             "r = RunRecord.open(sys.argv[1])\n"
             "for n in range(100):\n    r.event('check', writer=sys.argv[2], n=n)\n")
    procs = [subprocess.Popen([sys.executable, "-c", child, str(running.path), str(w)])
             for w in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]

    result = verify(running.path)
    assert result.ok, result.problems
    assert result.events == 4 + 400
    written = [(e["data"]["writer"], e["data"]["n"]) for e in running.events()[4:]]
    assert sorted(written) == sorted((str(w), n) for w in range(4) for n in range(100))


def test_a_writer_killed_midway_leaves_a_record_that_verifies(running):
    child = ("import sys\nfrom runbook.audit import RunRecord\n"
             "r = RunRecord.open(sys.argv[1])\n"
             "for n in range(20000):\n    r.event('check', n=n, detail='x' * 3000)\n")
    proc = subprocess.Popen([sys.executable, "-c", child, str(running.path)])
    deadline = time.monotonic() + 30
    while len(lines_of(running.path)) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    result = verify(running.path)
    assert result.ok, result.problems
    assert result.events >= 40
    assert any(n.startswith("not finished") for n in result.notes)
    running.event("check", name="after the kill")  # the chain goes on
    assert verify(running.path).ok


def test_torn_last_line_is_dropped_on_the_next_append_and_recorded(running):
    fragment = b'{"seq":5,"at":"2026-12-04T10:00:00.000Z","kind":"chan'
    with open(running.path / "events.jsonl", "ab") as handle:
        handle.write(fragment)

    stored = running.event("check", name="resumed")

    dropped = running.events()[4]
    assert dropped["kind"] == "torn-line-dropped"
    assert dropped["data"] == {"line": 5, "bytes": len(fragment),
                               "sha256": sha(fragment), "text": fragment.decode()}
    assert stored["seq"] == 6
    assert verify(running.path).ok


def test_a_damaged_last_line_stops_further_appends(running):
    lines = lines_of(running.path)
    write_lines(running.path, [*lines[:-1], lines[-1].replace(b"check 2", b"check 9")])
    with pytest.raises(RecordDamaged, match="line 4"):
        running.event("check")


# -- files ---------------------------------------------------------------------


def test_write_json_is_private_and_writes_datetimes_as_iso(running):
    taken = datetime(2026, 12, 4, 10, 15, 30, 250000, tzinfo=timezone.utc)
    path = running.write_json("inventory/before.json", {"taken_at": taken,
                                                         "transport_rules": []})
    assert path == running.path / "inventory" / "before.json"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert running.read_json("inventory/before.json") == {
        "taken_at": "2026-12-04T10:15:30.250Z", "transport_rules": []}


def test_write_text_masks_the_certificate_password(running):
    path = running.write_text("notes/pwsh.log", f"-Password {SECRET}\n")
    assert path.read_text() == "-Password [redacted]\n"


@pytest.mark.parametrize("relpath", [
    "../escape.json", "/etc/passwd", "inventory/../../x.json", "", "a//b.json",
    "./a.json", "backup\\rule.json", "C:/x.json", "run.json", "events.jsonl",
    "manifest.json", "inventory/..",
])
def test_paths_outside_the_folder_or_managed_files_are_refused(running, relpath):
    before = sorted(p.name for p in running.path.parent.parent.rglob("*"))
    with pytest.raises(UnsafePath) as caught:
        running.write_json(relpath, {})
    assert isinstance(caught.value, ValueError)
    assert repr(relpath) in str(caught.value)
    assert sorted(p.name for p in running.path.parent.parent.rglob("*")) == before


def test_a_symbolic_link_out_of_the_folder_is_refused(running, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (running.path / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link"):
        running.write_json("link/x.json", {})
    assert list(outside.iterdir()) == []


def test_safe_filename_keeps_slash_and_backslash_names_apart():
    slash, backslash = safe_filename("Out/bound"), safe_filename("Out\\bound")
    assert slash != backslash
    assert slash.startswith("Out-bound-") and len(slash) == len("Out-bound-") + 8
    assert re.fullmatch(r"[A-Za-z0-9._-]+", safe_filename("[SEPPmail] a/b\\c <x>"))
    assert safe_filename("///").startswith("object-")


# -- run.json and steps ---------------------------------------------------------


def test_update_run_merges_and_keeps_the_identity(running):
    run = running.update_run(ticket="CS-1234", login={"token": "abc"})
    assert run["ticket"] == "CS-1234"
    assert run["login"] == {"token": "[redacted]"}
    assert running.run() == run
    with pytest.raises(ValueError, match="tenant"):
        running.update_run(tenant="other")
    # the parameters are chained in run-started; a resume reads them from there
    with pytest.raises(ValueError, match=r"\['parameters'\] are fixed"):
        running.update_run(parameters={"confirm": True})


def test_steps_record_status_times_duration_and_error(running):
    running.step_started("cleanup", "notebooks/03-cleanup.ipynb")
    started = running.run()["steps"][0]
    assert started == {"name": "cleanup", "notebook": "notebooks/03-cleanup.ipynb",
                       "status": "running", "started_at": started["started_at"]}
    error = {"cell": 7, "ename": "CommandFailed", "evalue": "Remove-InboundConnector"}
    running.step_finished("cleanup", "failed", error=error)

    step = running.run()["steps"][0]
    assert step["status"] == "failed"
    assert step["error"] == error
    elapsed = (datetime.fromisoformat(step["ended_at"])
               - datetime.fromisoformat(step["started_at"])).total_seconds()
    assert step["duration_s"] == pytest.approx(elapsed, abs=0.002)
    kinds = [(e["kind"], e["data"]) for e in running.events()[-2:]]
    assert kinds == [("step-started", {"step": "cleanup",
                                       "notebook": "notebooks/03-cleanup.ipynb"}),
                     ("step-finished", {"step": "cleanup", "status": "failed",
                                        "duration_s": step["duration_s"],
                                        "error": error})]


def test_a_step_is_finished_once_and_started_once_at_a_time(running):
    with pytest.raises(ValueError, match="'verify' is not running"):
        running.step_finished("verify", "succeeded")
    running.step_started("verify", "notebooks/05-verify-mailflow.ipynb")
    with pytest.raises(ValueError, match="already running"):
        running.step_started("verify", "notebooks/05-verify-mailflow.ipynb")
    with pytest.raises(ValueError, match="'done'"):
        running.step_finished("verify", "done")
    running.step_finished("verify", "failed")
    running.step_started("verify", "notebooks/05-verify-mailflow.ipynb")  # a retry
    assert [s["status"] for s in running.run()["steps"]] == ["failed", "running"]


# -- finish ------------------------------------------------------------------------


def test_finish_seals_every_file_and_ends_with_run_finished(pristine):
    files = sorted(p.relative_to(pristine).as_posix()
                   for p in pristine.rglob("*") if p.is_file())
    assert files == SMALL_RECORD_FILES

    manifest_raw = (pristine / "manifest.json").read_bytes()
    listed = json.loads(manifest_raw)["files"]
    assert sorted(listed) == sorted(set(files) - {"manifest.json", "events.jsonl"})
    for rel, entry in listed.items():
        data = (pristine / rel).read_bytes()
        assert entry == {"sha256": sha(data), "bytes": len(data)}

    last = json.loads(lines_of(pristine)[-1])
    assert last["kind"] == "run-finished"
    assert last["data"] == {"status": "succeeded", "manifest_sha256": sha(manifest_raw),
                            "events": len(lines_of(pristine))}
    run = json.loads((pristine / "run.json").read_text())
    assert run["status"] == "succeeded"
    assert run["ended_at"] >= run["started_at"]


def test_finish_completes_run_json_versions_with_the_bridge_s_last_report(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    for step, installed in (("01-prerequisites", ["1.2.5"]),
                            ("03-cleanup", ["2.0.2", "1.2.5"])):
        record.event("versions", step=step, pwsh="7.5.4", edition="Core",
                     ExchangeOnlineManagement="3.9.0", seppmail365cloud=installed,
                     runbook="0.0.0-kernel", host="pwsh")
    record.finish("succeeded")
    assert record.run()["versions"] == {
        "runbook": runbook.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "pwsh": "7.5.4", "edition": "Core",
        "ExchangeOnlineManagement": "3.9.0", "seppmail365cloud": ["2.0.2", "1.2.5"],
        "bridge": "pwsh"}
    assert verify(record.path).ok


def test_finished_record_files_are_0600_and_folders_0700(pristine):
    for path in [pristine, *pristine.rglob("*")]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_a_finished_record_takes_no_more_writes(finished):
    record = RunRecord.open(finished)
    with pytest.raises(RecordSealed):
        record.event("check")
    with pytest.raises(RecordSealed):
        record.write_json("inventory/late.json", {})
    with pytest.raises(RecordSealed):
        record.update_run(status="failed")
    with pytest.raises(RecordSealed):
        record.finish("failed")
    assert verify(finished).ok


def test_a_notebook_that_cannot_be_rendered_is_recorded_and_sealed(running):
    broken = running.path / "notebooks/03-cleanup.ipynb"
    broken.parent.mkdir()
    broken.write_text('{"cells": [{"source": "print(\'' + SECRET + '\')"')  # torn
    running.finish("failed")

    failed = [e["data"] for e in running.events() if e["kind"] ==
              "notebook-render-failed"]
    assert [f["file"] for f in failed] == ["notebooks/03-cleanup.ipynb"]
    assert SECRET.encode() not in broken.read_bytes()
    assert verify(running.path).ok


def test_a_report_that_fails_still_leaves_a_sealed_record(running, monkeypatch):
    from runbook import report

    def broken_report(run_dir):
        raise RuntimeError("template missing")

    monkeypatch.setattr(report, "render_report", broken_report)
    with pytest.raises(RuntimeError, match="template missing"):
        running.finish("succeeded")
    kinds = [e["kind"] for e in running.events()]
    assert kinds[-2:] == ["report-render-failed", "run-finished"]
    assert verify(running.path).ok


def test_a_reopened_run_archives_its_attempt_and_seals_again(finished):
    record = RunRecord.open(finished)
    sealed_before = json.loads(lines_of(finished)[-1])["data"]["manifest_sha256"]

    assert record.reopen("resume from cleanup") == "attempts/1"
    reopened = record.events()[-1]
    assert reopened["kind"] == "run-reopened"
    assert reopened["data"] == {"reason": "resume from cleanup", "archive": "attempts/1",
                                "manifest_sha256": sealed_before,
                                "moved": ["report.html", "notebooks"],
                                "copied": ["run.json"]}
    assert sorted(p.relative_to(finished / "attempts/1").as_posix()
                  for p in (finished / "attempts/1").rglob("*") if p.is_file()) == [
        "manifest.json", "notebooks/01-prerequisites.html",
        "notebooks/01-prerequisites.ipynb", "report.html", "run.json"]
    assert record.run()["status"] == "running" and record.run()["ended_at"] is None
    assert verify(finished).ok

    record.step_started("cleanup", "notebooks/03-cleanup.ipynb")
    executed_notebook(finished / "notebooks/03-cleanup.ipynb")
    record.step_finished("cleanup", "succeeded")
    record.finish("succeeded")
    result = verify(finished)
    assert result.ok, result.problems
    assert "attempts/1/report.html" in json.loads(
        (finished / "manifest.json").read_text())["files"]


def test_a_changed_file_of_an_archived_attempt_fails_verification(finished):
    RunRecord.open(finished).reopen("resume")
    path = finished / "attempts/1/notebooks/01-prerequisites.ipynb"
    path.write_bytes(path.read_bytes().replace(b"ok", b"ko"))
    assert verify(finished).problems == [
        "attempts/1/notebooks/01-prerequisites.ipynb: SHA-256 differs from "
        "attempts/1/manifest.json"]


def test_only_a_finished_run_can_be_reopened(running):
    with pytest.raises(ValueError, match="not finished"):
        running.reopen("resume")


def test_unknown_run_status_is_refused_before_anything_changes(running):
    with pytest.raises(ValueError, match="'done'"):
        running.finish("done")
    assert running.run()["status"] == "running"


def test_secrets_land_in_no_file_of_the_folder(pristine):
    for path in pristine.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in (SECRET, "p-as-param", "p-in-meta"):
                assert secret.encode() not in data, (path, secret)


def test_scrubbing_a_notebook_is_itself_an_event(pristine):
    kinds = [json.loads(line)["kind"] for line in lines_of(pristine)]
    assert "secrets-scrubbed" in kinds


# -- verify --------------------------------------------------------------------------


def test_intact_record_verifies(pristine):
    result = verify(pristine)
    events = len(lines_of(pristine))
    assert result.ok and result.problems == [] and result.notes == []
    assert (result.events, result.files) == (events, len(SMALL_RECORD_FILES) - 2)
    assert str(result) == f"intact: {events} events, {len(SMALL_RECORD_FILES) - 2} files"
    assert result.seal == json.loads(lines_of(pristine)[-1])["hash"]


@pytest.mark.parametrize("relpath", SMALL_RECORD_FILES)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_changing_a_byte_of_any_file_fails_verification(finished, relpath, where):
    path = finished / relpath
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))

    result = verify(finished)
    assert not result.ok
    assert result.problems[0].startswith(relpath), result.problems


def test_changing_any_byte_of_the_events_names_its_line(finished):
    path = finished / "events.jsonl"
    original = path.read_bytes()
    line_of = [original.count(b"\n", 0, i) + 1 for i in range(len(original))]
    for index in range(len(original)):
        data = bytearray(original)
        data[index] ^= 0x01
        path.write_bytes(bytes(data))
        result = verify(finished)
        assert not result.ok, index
        assert result.problems[0].startswith(f"events.jsonl line {line_of[index]}:"), (
            index, result.problems)


def test_a_removed_event_is_found_at_the_line_after(finished):
    lines = lines_of(finished)
    write_lines(finished, lines[:3] + lines[4:])
    assert verify(finished).problems[0].startswith("events.jsonl line 4: seq 5 ")


def test_reordered_events_are_found(finished):
    lines = lines_of(finished)
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(finished, lines)
    assert verify(finished).problems[0].startswith("events.jsonl line 3: seq 4 ")


def test_an_inserted_event_is_found(finished):
    lines = lines_of(finished)
    write_lines(finished, lines[:3] + [lines[2]] + lines[3:])
    assert verify(finished).problems[0].startswith("events.jsonl line 4: seq 3 ")


def test_a_forged_event_with_a_valid_own_hash_breaks_the_link(finished):
    lines = lines_of(finished)
    forged = audit._event_line(3, "check", {"name": "forged"}, "f" * 64)
    write_lines(finished, lines[:2] + [forged] + lines[3:])
    problem = verify(finished).problems[0]
    assert problem.startswith("events.jsonl line 3: prev does not match")


def test_a_deleted_file_fails_verification(finished):
    (finished / "inventory/after.json").unlink()
    assert verify(finished).problems == [
        "inventory/after.json: missing (listed in manifest.json)"]


def test_an_added_file_fails_verification(finished):
    (finished / "backup/extra.json").write_text("{}")
    assert verify(finished).problems == [
        "backup/extra.json: not in manifest.json (added after the run finished)"]


def test_an_added_symbolic_link_fails_verification(finished, tmp_path):
    (finished / "backup/linked").symlink_to(tmp_path)
    (finished / "inventory/link.json").symlink_to(finished / "run.json")
    assert verify(finished).problems == [
        "backup/linked: not in manifest.json (added after the run finished)",
        "inventory/link.json: not in manifest.json (added after the run finished)"]


def test_a_file_swapped_for_a_link_fails_verification(finished, tmp_path):
    copy = tmp_path / "after.json"
    copy.write_bytes((finished / "inventory/after.json").read_bytes())
    (finished / "inventory/after.json").unlink()
    (finished / "inventory/after.json").symlink_to(copy)
    assert verify(finished).problems == [
        "inventory/after.json: a symbolic link, not a sealed file"]


def test_an_event_chained_after_run_finished_fails_verification(finished):
    lines = lines_of(finished)
    late = audit._event_line(len(lines) + 1, "check", {"name": "late"}, sha(lines[-1]))
    write_lines(finished, [*lines, late])
    assert verify(finished).problems[0] == (
        f"events.jsonl line {len(lines) + 1}: an event after run-finished")


def test_finish_refuses_to_seal_a_symbolic_link(running, tmp_path):
    (running.path / "inventory").mkdir()
    (running.path / "inventory/before.json").symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="inventory/before.json"):
        running.finish("succeeded")
    assert not (running.path / "manifest.json").exists()


def test_a_removed_manifest_fails_verification(finished):
    (finished / "manifest.json").unlink()
    lines = len(lines_of(finished))
    assert verify(finished).problems == [
        f"manifest.json: missing, but events.jsonl line {lines} records the run "
        "as finished"]


def test_a_removed_run_finished_event_fails_verification(finished):
    write_lines(finished, lines_of(finished)[:-1])
    problem = verify(finished).problems[0]
    assert problem.startswith("events.jsonl: the last intact event is")
    assert "not 'run-finished'" in problem


def test_a_truncated_last_line_of_a_finished_record_fails(finished):
    path = finished / "events.jsonl"
    path.write_bytes(path.read_bytes()[:-20])
    lines = len(lines_of(finished)) + 1
    result = verify(finished)
    assert not result.ok
    assert result.problems[0].startswith(f"events.jsonl line {lines}: an incomplete")


def test_an_unfinished_record_verifies_up_to_its_last_event(running):
    result = verify(running.path)
    assert result.ok and result.problems == []
    assert result.events == 4 and result.files == 0 and not result.finished
    assert result.notes == ["not finished: no manifest.json yet; events verified up "
                            "to line 4, files are not sealed"]


def test_a_torn_last_line_of_an_unfinished_record_is_a_note(running):
    with open(running.path / "events.jsonl", "ab") as handle:
        handle.write(b'{"seq":5,"at":"2026-12-04T10:')
    result = verify(running.path)
    assert result.ok
    assert result.events == 4
    assert result.notes[0] == ("events.jsonl line 5: torn last line (29 bytes) "
                               "ignored; a write was interrupted")


def test_a_broken_earlier_line_of_an_unfinished_record_fails(running):
    lines = lines_of(running.path)
    lines[1] = lines[1].replace(b"check 0", b"check X")
    write_lines(running.path, lines)
    assert verify(running.path).problems == [
        "events.jsonl line 2: content does not match its hash (the line was changed)"]


def test_run_json_must_name_the_run_of_its_events(running):
    run = json.loads((running.path / "run.json").read_text())
    run["run_id"] = "20260101T000000Z-0000"
    (running.path / "run.json").write_text(json.dumps(run))
    assert verify(running.path).problems[0].startswith("run.json: run_id ")


def test_verify_names_a_folder_that_is_not_a_record(tmp_path):
    result = verify(tmp_path)
    assert not result.ok
    assert result.problems == [f"not a run folder: {tmp_path} (no run.json)"]


# -- redact ------------------------------------------------------------------------


def test_redact_removes_secret_keys_at_any_depth_but_not_keywords():
    given = {"Password": "a", "steps": [{"client_secret": "b", "n": 1}],
             "keyword": "c", "Keywords": ["d"], "AccessToken": "e", "api_key": "f",
             "Credential": "g", "certificate_password": "h",
             "TlsSenderCertificateName": "tid.ch.seppmail.cloud", "count": 3}
    assert redact(given) == {
        "Password": "[redacted]", "steps": [{"client_secret": "[redacted]", "n": 1}],
        "keyword": "c", "Keywords": ["d"], "AccessToken": "[redacted]",
        "api_key": "[redacted]", "Credential": "[redacted]",
        "certificate_password": "[redacted]",
        "TlsSenderCertificateName": "tid.ch.seppmail.cloud", "count": 3}


def test_redact_masks_the_environment_secrets_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("RUNBOOK_ACCESS_TOKEN", "eyJ0eXAi.tok")
    given = {"a": SECRET, "b": ("x", f"Bearer eyJ0eXAi.tok;{SECRET}"), "c": 2.5}
    assert redact(given) == {"a": "[redacted]",
                             "b": ["x", "Bearer [redacted];[redacted]"], "c": 2.5}


def test_redact_ignores_unset_or_empty_environment_secrets(monkeypatch):
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", "")
    assert redact({"text": "nothing to hide"}) == {"text": "nothing to hide"}


# -- the command line ----------------------------------------------------------------


def test_main_verify_prints_intact_and_exits_0(pristine, capsys):
    assert main_verify([str(pristine)]) == 0
    out = capsys.readouterr().out.splitlines()
    events = len(lines_of(pristine))
    assert out[0] == f"intact: {events} events, {len(SMALL_RECORD_FILES) - 2} files"
    assert out[1] == f"seal: {json.loads(lines_of(pristine)[-1])['hash']}"


def test_main_verify_prints_the_first_problem_and_exits_1(finished, capsys):
    (finished / "report.html").write_text("<p>all good</p>")
    assert main_verify([str(finished)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["report.html: SHA-256 differs from manifest.json (changed after "
                   "the run finished)"]


def test_main_verify_passes_an_unfinished_record_with_a_note(running, capsys):
    assert main_verify([str(running.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "intact: 4 events, 0 files"
    assert out[1].startswith("note: not finished")


def test_the_runbook_command_verifies_and_names_the_changed_line(finished):
    command = [str(Path(sys.executable).parent / "runbook"), "audit", "verify",
               str(finished)]
    intact = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (intact.returncode, intact.stdout.splitlines()[0]) == (
        0, f"intact: {len(lines_of(finished))} events, "
           f"{len(SMALL_RECORD_FILES) - 2} files")

    lines = lines_of(finished)
    lines[2] = lines[2].replace(b'"kind":"', b'"kind":"x', 1)
    write_lines(finished, lines)
    broken = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (broken.returncode, broken.stdout.splitlines()[0]) == (
        1, "events.jsonl line 3: content does not match its hash (the line was "
           "changed)")


def test_runbook_audit_without_verify_prints_its_usage_and_exits_2():
    command = [str(Path(sys.executable).parent / "runbook"), "audit"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "usage: runbook audit verify "
                                                 "RUN_DIR\n")


# -- parameters in the chain (issue 7, hostile findings) ------------------------


def plan_only_parameters() -> dict:
    from runbook import params

    return params.validate(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
                           region="ch", routing="inline").as_dict()


def set_run_field(folder: Path, path: tuple[str, ...], value) -> None:
    run = json.loads((folder / "run.json").read_text())
    target = run
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")


def test_run_started_chains_the_parameters_and_identity_run_json_holds(tmp_path):
    given = plan_only_parameters()
    record = RunRecord.create(tmp_path, "contoso", parameters=given, operator="alice",
                              sandbox_state="/tmp/contoso.json")
    started = record.events()[0]["data"]
    assert started == {"tenant": "contoso", "run_id": record.path.name,
                       "operator": "alice", "host": socket.gethostname(),
                       "backend": "sandbox", "parameters": given,
                       "sandbox_state": "/tmp/contoso.json"}
    assert record.run()["parameters"] == given
    assert record.chained_parameters() == given
    assert given["confirm"] is False and given["domains"] == ["contoso.ch",
                                                               "contoso-group.ch"]


def test_edited_parameters_of_an_unfinished_record_are_named_by_verify(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    set_run_field(record.path, ("parameters", "confirm"), True)
    set_run_field(record.path, ("parameters", "domains"), ["contoso.ch"])

    result = verify(record.path)
    assert not result.ok
    assert result.problems == [
        "run.json: parameters.confirm True differs from events.jsonl line 1 (False)",
        "run.json: parameters.domains ['contoso.ch'] differs from events.jsonl line 1 "
        "(['contoso.ch', 'contoso-group.ch'])"]
    assert record.chained_parameters()["confirm"] is False


@pytest.mark.parametrize("field, value, problem", [
    ("tenant", "fabrikam", "run.json: tenant 'fabrikam' differs from events.jsonl "
                           "line 1 ('contoso')"),
    ("operator", "mallory", "run.json: operator 'mallory' differs from events.jsonl "
                            "line 1 ('alice')"),
    ("sandbox_state", "/tmp/other.json", "run.json: sandbox_state '/tmp/other.json' "
     "differs from events.jsonl line 1 ('/tmp/contoso.json')"),
])
def test_edited_identity_of_an_unfinished_record_is_named_by_verify(
        tmp_path, field, value, problem):
    record = RunRecord.create(tmp_path, "contoso", parameters={}, operator="alice",
                              sandbox_state="/tmp/contoso.json")
    set_run_field(record.path, (field,), value)
    assert verify(record.path).problems == [problem]


def test_a_sandbox_state_made_later_by_a_notebook_run_alone_still_verifies(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters={})
    record.update_run(sandbox_state=str(tmp_path / "fresh.json"))
    assert verify(record.path).ok


def test_chained_parameters_refuse_a_changed_first_event(running):
    lines = lines_of(running.path)
    lines[0] = lines[0].replace(b'"tenant":"contoso"', b'"tenant":"fabrikam"', 1)
    write_lines(running.path, lines)
    with pytest.raises(RecordDamaged, match=r"line 1: content does not match its "
                                            r"hash \(the line was changed\)"):
        running.chained_parameters()


def test_chained_parameters_refuse_a_record_without_them(running):
    lines = lines_of(running.path)
    first = json.loads(lines[0])
    del first["data"]["parameters"]
    body = json.dumps({k: first[k] for k in ("seq", "at", "kind", "data", "prev")},
                      ensure_ascii=False, separators=(",", ":")).encode()
    lines[0] = body[:-1] + b',"hash":"' + sha(body).encode() + b'"}'
    write_lines(running.path, lines[:1])
    with pytest.raises(RecordDamaged, match="run-started holds no parameters"):
        running.chained_parameters()
    assert verify(running.path).notes[0] == (
        "events.jsonl line 1 holds no parameters (an older record); run.json's are "
        "not checked")


def test_a_reopened_run_keeps_its_sealed_run_json_with_the_old_manifest(finished):
    sealed = (finished / "run.json").read_bytes()
    RunRecord.open(finished).reopen("resume")

    assert (finished / "attempts/1/run.json").read_bytes() == sealed
    assert json.loads((finished / "run.json").read_text())["status"] == "running"
    assert verify(finished).ok
    # An edit made before the reopen shows in the archived copy.
    (finished / "attempts/1/run.json").write_bytes(sealed.replace(b'"confirm": true',
                                                                  b'"confirm": false'))
    assert verify(finished).problems == [
        "attempts/1/run.json: SHA-256 differs from attempts/1/manifest.json"]


def test_resume_refuses_a_sealed_record_whose_run_json_was_edited(tmp_path):
    """The hostile tester's reproduction: plan-only run, confirm set to true in
    run.json, then resume. Nothing may run, and nothing is archived."""
    from runbook import chain

    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    record.step_started("01-prerequisites", "notebooks/01-prerequisites.ipynb")
    record.step_finished("01-prerequisites", "planned")
    record.finish("planned")
    set_run_field(record.path, ("parameters", "confirm"), True)
    events_before = lines_of(record.path)

    with pytest.raises(audit.RecordNotIntact) as caught:
        chain.resume(record.path, progress=lambda *_: None)
    assert caught.value.problems == [
        "run.json: parameters.confirm True differs from events.jsonl line 1 (False)",
        "run.json: SHA-256 differs from manifest.json (changed after the run finished)"]
    assert str(caught.value) == (
        f"{record.path} is not intact (runbook audit verify): run.json: "
        "parameters.confirm True differs from events.jsonl line 1 (False); and 1 more "
        "problem")
    assert lines_of(record.path) == events_before
    assert not (record.path / "attempts").exists()


def test_rollback_refuses_a_record_whose_run_json_was_edited(tmp_path, capsys):
    """Rollback recreates from the undone run's backup with its parameters: an
    edited record is refused before any run folder is made, exit 1."""
    from runbook import cli

    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    record.finish("planned")
    set_run_field(record.path, ("parameters", "region"), "de")
    assert cli.main(["rollback", str(record.path), "--confirm"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"runbook: {record.path} cannot be rolled back; it is not "
                          "intact:\n  run.json: parameters.region 'de' differs from "
                          "events.jsonl line 1 ('ch')")
    assert sorted(p.name for p in (tmp_path / "contoso").iterdir()) == [
        record.path.name]


def test_runbook_resume_of_an_edited_unfinished_record_exits_1_naming_it(
        tmp_path, capsys):
    from runbook import cli

    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    set_run_field(record.path, ("parameters", "confirm"), True)
    assert cli.main(["resume", str(record.path)]) == 1
    assert capsys.readouterr().err == (
        f"runbook: {record.path} cannot be resumed; it is not intact:\n"
        "  run.json: parameters.confirm True differs from events.jsonl line 1 "
        "(False)\n")
    assert [e["kind"] for e in record.events()] == ["run-started"]


# -- a record cut short (issue 7, hostile findings) -----------------------------


def test_a_finished_record_cut_short_without_its_manifest_fails(finished, capsys):
    (finished / "manifest.json").unlink()
    write_lines(finished, lines_of(finished)[:5])

    result = verify(finished)
    assert not result.ok
    assert result.problems == [
        "run.json: status 'succeeded' says the run finished, but events.jsonl has no "
        "run-finished (events verified up to line 5): the record was cut short or its "
        "seal removed, or the run died while sealing"]
    assert main_verify([str(finished)]) == 1
    assert capsys.readouterr().out.startswith("run.json: status 'succeeded'")


@pytest.mark.parametrize("status", ["failed", "planned", "cancelled"])
def test_every_finished_status_without_a_run_finished_fails(running, status):
    set_run_field(running.path, ("status",), status)
    assert verify(running.path).problems[0].startswith(
        f"run.json: status {status!r} says the run finished, but events.jsonl has no "
        "run-finished (events verified up to line 4)")


def test_a_reopened_record_that_claims_finished_again_without_a_seal_fails(finished):
    RunRecord.open(finished).reopen("resume")
    reopened_at = len(lines_of(finished))
    set_run_field(finished, ("status",), "succeeded")
    assert verify(finished).problems == [
        f"run.json: status 'succeeded' says the run finished, but events.jsonl has no "
        f"run-finished after line {reopened_at} (events verified up to line "
        f"{reopened_at}): the record was cut short or its seal removed, or the run "
        "died while sealing"]


def test_run_json_status_must_match_run_finished(finished):
    """Also caught by the manifest; this names what the edit says."""
    set_run_field(finished, ("status",), "planned")
    problems = verify(finished).problems
    assert "run.json: status 'planned' differs from run-finished (events.jsonl line " \
           f"{len(lines_of(finished))}: 'succeeded')" in problems


# -- short secrets and the password file (issue 7 / 10, hostile findings) -------


@pytest.fixture
def short_password(monkeypatch):
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", "ch")
    audit._warn_short_secret.cache_clear()


def test_a_short_secret_leaves_parameters_and_text_whole(short_password, tmp_path,
                                                         caplog):
    given = plan_only_parameters()
    record = RunRecord.create(tmp_path, "contoso", parameters=given)
    record.event("check", step="prerequisites", name="DNS contoso.ch",
                 detail="10 contoso-ch.gate.seppmail.cloud., region ch")

    assert record.run()["parameters"] == given
    assert record.run()["parameters"]["region"] == "ch"
    assert record.events()[-1]["data"]["detail"] == ("10 contoso-ch.gate.seppmail."
                                                     "cloud., region ch")
    assert b"[redacted]" not in (record.path / "events.jsonl").read_bytes()
    assert redact({"password": "ch", "Token": "x"}) == {"password": "[redacted]",
                                                         "Token": "[redacted]"}
    assert ("a secret of 2 characters is too short to be masked inside text (at least "
            "8 are needed)") in caplog.text
    from runbook import params
    assert params.validate(**record.chained_parameters()).region == "ch"


def test_a_secret_of_eight_characters_is_masked_but_not_in_parameters(
        monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", "contoso-")  # 8 characters
    given = plan_only_parameters()
    record = RunRecord.create(tmp_path, "contoso", parameters=dict(
        given, certificate_password="contoso-"))
    record.event("check", detail="smarthost contoso-ch.gate.seppmail.cloud")

    assert record.run()["parameters"] == dict(given, certificate_password="[redacted]")
    assert record.chained_parameters()["domains"] == ["contoso.ch", "contoso-group.ch"]
    assert record.events()[-1]["data"]["detail"] == ("smarthost [redacted]ch.gate."
                                                     "seppmail.cloud")
    assert redact("contoso") == "contoso"


def test_the_password_file_is_read_without_one_trailing_newline(monkeypatch,
                                                                 tmp_path):
    from runbook import credentials

    monkeypatch.delenv("RUNBOOK_CERT_PASSWORD")
    secret = tmp_path / "pfx.pass"
    secret.write_text("File-Pa55-9d41e0\n\n")
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD_FILE", str(secret))
    assert credentials.cert_password() == "File-Pa55-9d41e0\n"
    secret.write_text("File-Pa55-9d41e0\r\n")
    assert credentials.cert_password() == "File-Pa55-9d41e0"
    env = credentials.child_environment()
    assert env["RUNBOOK_CERT_PASSWORD"] == "File-Pa55-9d41e0"
    assert env["RUNBOOK_CERT_PASSWORD_FILE"] == str(secret)
    # the variable itself wins when both are set
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD", "Env-Pa55-0000")
    assert credentials.child_environment()["RUNBOOK_CERT_PASSWORD"] == "Env-Pa55-0000"
    assert credentials.secret_values() == ["File-Pa55-9d41e0", "Env-Pa55-0000"]


def test_the_password_file_s_content_is_masked_in_the_record(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNBOOK_CERT_PASSWORD")
    secret = tmp_path / "pfx.pass"
    secret.write_text("File-Pa55-9d41e0\n")
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD_FILE", str(secret))
    record = RunRecord.create(tmp_path / "reports", "contoso", parameters={})
    record.event("check", detail="bridge said File-Pa55-9d41e0 was wrong")
    record.write_text("notes.txt", "File-Pa55-9d41e0")

    assert record.events()[-1]["data"]["detail"] == "bridge said [redacted] was wrong"
    assert (record.path / "notes.txt").read_text() == "[redacted]"


def test_an_unreadable_password_file_names_the_variable(monkeypatch, tmp_path):
    from runbook import credentials

    monkeypatch.delenv("RUNBOOK_CERT_PASSWORD")
    missing = tmp_path / "nonexistent.pass"
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD_FILE", str(missing))
    with pytest.raises(credentials.SecretFileUnreadable) as caught:
        credentials.child_environment()
    assert str(caught.value) == (f"RUNBOOK_CERT_PASSWORD_FILE={missing}: the "
                                 "certificate password file cannot be read (No such "
                                 "file or directory)")
    assert redact("nothing to mask") == "nothing to mask"


def test_a_powershell_child_gets_the_file_s_password_in_its_environment(
        monkeypatch, tmp_path):
    """bridge.ps1 reads $env:RUNBOOK_CERT_PASSWORD; this child reports what it got."""
    from runbook.powershell import Session

    monkeypatch.delenv("RUNBOOK_CERT_PASSWORD")
    secret = tmp_path / "pfx.pass"
    secret.write_text("File-Pa55-9d41e0\n")
    monkeypatch.setenv("RUNBOOK_CERT_PASSWORD_FILE", str(secret))
    child = ("import json, os, sys\n"
             "print(json.dumps({'hello': 'runbook-bridge', 'protocol': 1, 'host': "
             "'sandbox', 'versions': {'password': "
             "os.environ.get('RUNBOOK_CERT_PASSWORD')}}), flush=True)\n"
             "sys.stdin.read()\n")
    with Session([sys.executable, "-c", child], timeout=30) as session:
        assert session.versions == {"password": "File-Pa55-9d41e0"}


def test_an_edited_step_status_of_an_unfinished_record_is_named_by_verify(tmp_path):
    """The final tester's case: after a kill, marking steps succeeded in run.json
    made resume skip them. The steps are in the chain; verify compares."""
    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    record.step_started("01-prerequisites", "notebooks/01-prerequisites.ipynb")
    record.step_finished("01-prerequisites", "succeeded")
    record.step_started("02-install-module", "notebooks/02-install-module.ipynb")
    run = json.loads((record.path / "run.json").read_text())
    run["steps"][1]["status"] = "succeeded"
    run["steps"].append(dict(run["steps"][1], name="03-cleanup"))
    (record.path / "run.json").write_text(json.dumps(run))
    check = audit.verify(record.path)
    assert check.problems == ["run.json: step 2 is ('02-install-module', 'succeeded') "
                              "where the events say ('02-install-module', 'running')"]
    # Resume decides from the chain, which run.json cannot change.
    assert record.chained_steps() == [("01-prerequisites", "succeeded"),
                                      ("02-install-module", "running")]


def test_a_record_killed_between_run_json_and_its_step_event_still_verifies(tmp_path):
    record = RunRecord.create(tmp_path, "contoso", parameters=plan_only_parameters())
    record.step_started("01-prerequisites", "notebooks/01-prerequisites.ipynb")
    run = json.loads((record.path / "run.json").read_text())
    run["steps"].append({"name": "02-install-module", "status": "running",
                         "notebook": "notebooks/02-install-module.ipynb",
                         "started_at": run["steps"][0]["started_at"]})
    (record.path / "run.json").write_text(json.dumps(run))
    check = audit.verify(record.path)
    assert check.ok, check.problems
    assert "run.json: its last step is one write ahead of events.jsonl (the run " \
           "stopped between the two)" in check.notes
