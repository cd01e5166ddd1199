"""The protocol-1 client against a well-behaved child (tests/fault_children/echo.py)."""

import errno
import gc
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runbook.powershell import (ChildStartError, CommandFailed, CommandRefused,
                                ObjectNotFound, PowerShellError, ProtocolError, Reply,
                                Session, SessionTimeout, pwsh_command, sandbox_command)
from runbook.powershell.session import BRIDGE_SCRIPT

CHILDREN = Path(__file__).parent / "fault_children"
ECHO = [sys.executable, str(CHILDREN / "echo.py")]

NOT_FOUND = {
    "message": "Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
               "ManagementObjectNotFoundException|The operation couldn't be performed "
               "because object 'nosuch' couldn't be found on "
               "'ZRAP278A001DC01.EURP278A001.PROD.OUTLOOK.COM'.",
    "category": "NotSpecified", "error_id": "ManagementObjectNotFoundException",
    "target": None,
}


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a parent that is not us."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


@pytest.fixture
def session():
    with Session(ECHO, timeout=10) as s:
        yield s


def test_hello_is_read_at_start(session):
    assert session.hello["hello"] == "runbook-bridge"
    assert session.host == "fault"
    assert session.versions["ExchangeOnlineManagement"] == "3.9.0"
    assert session.pid == session.hello["pid"]


def test_request_carries_command_parameters_and_confirmation(session):
    reply = session.call("Remove-InboundConnector", {"Identity": "x"}, confirmed=True)
    assert isinstance(reply, Reply)
    assert reply.output == [{"request": {"id": 1, "command": "Remove-InboundConnector",
                                         "parameters": {"Identity": "x"},
                                         "confirmed": True}}]
    assert reply.errors == [] and reply.warnings == [] and reply.duration_ms == 0.1


def test_ids_increase_by_one_per_call(session):
    ids = [session.call("Get-AcceptedDomain").id for _ in range(3)]
    assert ids == [1, 2, 3]


def test_invoke_returns_the_output_list(session):
    output = [{"Name": "a"}, {"Name": "b"}]
    assert session.invoke("Get-TransportRule", Output=output) == output
    assert session.invoke("Get-TransportRule", Output=[]) == []


def test_non_ascii_passes_both_ways_unchanged(session):
    text = "Grüezi Zürich – 東京 – 🙂 – \u2028 – \"quoted\" – \\ – \t"
    reply = session.call("Set-TransportRule", {"Comments": text}, confirmed=True)
    assert reply.output[0]["request"]["parameters"]["Comments"] == text


def test_warnings_are_kept_and_logged_at_warning(session, caplog):
    caplog.set_level(logging.DEBUG, logger="runbook.powershell.session")
    reply = session.call("Get-MessageTraceV2", {
        "Warnings": ["There are more results, use the following command to get more."]})
    assert reply.warnings == [
        "There are more results, use the following command to get more."]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        "Get-MessageTraceV2: There are more results, use the following command "
        "to get more."]


def test_notices_on_stderr_are_logged_at_warning_other_stderr_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="runbook.powershell.session")
    with Session([sys.executable, str(CHILDREN / "notice.py")], timeout=10) as s:
        s.call("Connect-ExchangeOnline", {"Device": True})
    by_level = {}
    for record in caplog.records:
        by_level.setdefault(record.levelno, []).append(record.getMessage())
    assert by_level[logging.WARNING] == [
        "To sign in, use a web browser to open the page "
        "https://microsoft.com/devicelogin and enter the code ABCD1234."]
    assert any(m.endswith("stderr: some diagnostic the person does not need")
               for m in by_level[logging.DEBUG])


def test_one_info_line_per_call_with_command_outcome_and_duration(session, caplog):
    caplog.set_level(logging.INFO, logger="runbook.powershell.session")
    session.call("Get-AcceptedDomain")
    with pytest.raises(ObjectNotFound):
        session.call("Get-InboundConnector", {"Errors": [NOT_FOUND]})
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 2
    assert infos[0].startswith("Get-AcceptedDomain ok in ")
    assert infos[0].endswith(" ms")
    assert infos[1].startswith(
        "Get-InboundConnector failed (ManagementObjectNotFoundException) in ")


def test_secret_parameters_are_masked_in_debug_log(session, caplog):
    caplog.set_level(logging.DEBUG, logger="runbook.powershell.session")
    session.call("Connect-ExchangeOnline", {
        "Organization": "contoso.onmicrosoft.com", "CertificatePassword": "hunter2",
        "AccessToken": "eyJ0eXAi", "Nested": {"ClientSecret": "s3cr3t"}})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "contoso.onmicrosoft.com" in logged
    for secret in ("hunter2", "eyJ0eXAi", "s3cr3t"):
        assert secret not in logged
    assert "'CertificatePassword': '***'" in logged


def test_info_line_never_shows_parameter_values(session, caplog):
    caplog.set_level(logging.INFO, logger="runbook.powershell.session")
    session.call("Get-InboundConnector", {"Identity": "confidential-name"})
    assert "confidential-name" not in caplog.text


def test_missing_identity_raises_object_not_found_with_the_identity(session):
    with pytest.raises(ObjectNotFound) as caught:
        session.call("Remove-InboundConnector", {"Identity": "nosuch",
                                                 "Errors": [NOT_FOUND]},
                     confirmed=True)
    error = caught.value
    assert isinstance(error, CommandFailed)
    assert error.command == "Remove-InboundConnector"
    assert error.errors == [NOT_FOUND]
    assert error.identity == "nosuch"
    assert str(error) == (
        "Remove-InboundConnector failed: The operation couldn't be performed because "
        "object 'nosuch' couldn't be found on "
        "'ZRAP278A001DC01.EURP278A001.PROD.OUTLOOK.COM'.")


def test_other_error_records_raise_command_failed_with_warnings_and_output(session):
    record = {"message": "The object 'CN=[SEPPmail.cloud] Inbound-InLine' already "
                         "exists.", "category": "InvalidOperation",
              "error_id": "ErrorInboundConnectorAlreadyExistsException", "target": None}
    with pytest.raises(CommandFailed) as caught:
        session.call("New-InboundConnector", {"Errors": [record, record],
                                              "Warnings": ["careful"],
                                              "Output": [{"Name": "half"}]},
                     confirmed=True)
    error = caught.value
    assert type(error) is CommandFailed
    assert error.error_id == "ErrorInboundConnectorAlreadyExistsException"
    assert error.warnings == ["careful"] and error.output == [{"Name": "half"}]
    assert str(error) == ("New-InboundConnector failed: The object "
                          "'CN=[SEPPmail.cloud] Inbound-InLine' already exists. "
                          "(and 1 more errors)")


@pytest.mark.parametrize("error_id", ["RunbookCommandNotAllowed",
                                      "RunbookConfirmationRequired"])
def test_refusals_raise_command_refused_not_command_failed(session, error_id):
    record = {"message": "refused", "category": "PermissionDenied",
              "error_id": error_id, "target": "Remove-Item"}
    with pytest.raises(CommandRefused) as caught:
        session.call("Remove-Item", {"Errors": [record]})
    assert not isinstance(caught.value, CommandFailed)
    assert caught.value.error_id == error_id
    assert str(caught.value) == "Remove-Item refused: refused"


def test_parameters_that_are_not_json_raise_type_error_and_send_nothing(session):
    with pytest.raises(TypeError, match="Get-MessageTraceV2: parameters must be JSON"):
        session.call("Get-MessageTraceV2", {"StartDate": object()})
    pid = session.pid
    assert session.call("Get-AcceptedDomain").id == 1
    assert session.pid == pid


def test_close_ends_the_child(session):
    pid = session.pid
    session.close()
    assert wait_gone(pid)
    with pytest.raises(PowerShellError, match="the session is closed"):
        session.call("Get-AcceptedDomain")


def test_context_manager_closes_the_child():
    with Session(ECHO, timeout=10) as s:
        pid = s.pid
    assert wait_gone(pid)


def test_forgotten_session_is_killed_when_collected():
    s = Session(ECHO, timeout=10)
    pid = s.pid
    del s
    gc.collect()
    assert wait_gone(pid)


def test_no_child_outlives_an_interpreter_that_forgot_to_close(tmp_path):
    script = tmp_path / "forget.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from runbook.powershell import Session
        keep = Session({ECHO!r}, timeout=10)
        print(keep.pid, flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=30, check=True)
    assert wait_gone(int(done.stdout.strip()))


def test_a_program_that_cannot_start_raises_child_start_error(tmp_path):
    missing = str(tmp_path / "no-such-pwsh")
    with pytest.raises(ChildStartError) as caught:
        Session([missing, "-File", "x.ps1"])
    assert caught.value.argv == [missing, "-File", "x.ps1"]
    assert caught.value.os_error.errno == errno.ENOENT
    assert isinstance(caught.value.__cause__, OSError)


def test_on_start_runs_after_every_hello():
    seen = []
    with Session(ECHO, timeout=10, on_start=lambda s: seen.append(
            s.invoke("Connect-ExchangeOnline")[0]["request"]["command"])) as s:
        assert seen == ["Connect-ExchangeOnline"]
        assert s.starts == 1


def test_env_and_cwd_reach_the_child(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(CHILDREN)!r})
        from _proto import hello, requests, reply, write
        hello()
        for request in requests():
            write(reply(request, [{{"cwd": os.getcwd(),
                                    "marker": os.environ.get("RUNBOOK_MARKER")}}]))
    """))
    env = dict(os.environ, RUNBOOK_MARKER="ä-1")
    with Session([sys.executable, str(probe)], timeout=10, env=env,
                 cwd=tmp_path) as s:
        assert s.invoke("Get-ConnectionInformation") == [
            {"cwd": str(tmp_path), "marker": "ä-1"}]


def test_pwsh_command_runs_the_packaged_bridge_without_profile_or_prompts():
    assert pwsh_command() == ["pwsh", "-NoLogo", "-NoProfile", "-NonInteractive",
                              "-File", str(BRIDGE_SCRIPT)]
    assert pwsh_command("/opt/microsoft/powershell/7/pwsh")[0] == (
        "/opt/microsoft/powershell/7/pwsh")
    assert BRIDGE_SCRIPT.name == "bridge.ps1" and BRIDGE_SCRIPT.is_file()


def test_sandbox_command_uses_this_interpreter(tmp_path):
    state = tmp_path / "contoso.state.json"
    assert sandbox_command(state) == [sys.executable, "-m", "runbook.sandbox",
                                      "--state", str(state)]


def test_errors_survive_pickling_with_their_attributes():
    errors = [
        ObjectNotFound("Get-InboundConnector", [NOT_FOUND], ["w"], [{"a": 1}]),
        ProtocolError("a line that is not JSON", line="x", exit_code=-9,
                      stderr_tail="boom", command="Get-TransportRule"),
        SessionTimeout("Get-TransportRule", 0.5),
        ChildStartError(["pwsh"], FileNotFoundError(errno.ENOENT, "No such file")),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy).keys() == vars(error).keys()
    assert pickle.loads(pickle.dumps(errors[0])).identity == "nosuch"
