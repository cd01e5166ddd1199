"""One misbehaving child per test (tests/fault_children/): the exact error it gets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runbook.powershell import ProtocolError, Session, SessionTimeout

from test_session import gone, wait_gone

CHILDREN = Path(__file__).parent / "fault_children"
ROOT = Path(__file__).resolve().parent.parent


def child(name: str) -> list[str]:
    return [sys.executable, str(CHILDREN / f"{name}.py")]


def test_child_that_writes_nothing_and_exits_is_a_protocol_error():
    with pytest.raises(ProtocolError) as caught:
        Session(child("silent_exit"), timeout=10)
    error = caught.value
    assert error.reason == "the child exited before its hello"
    assert error.line is None and error.exit_code == 0


def test_child_that_exits_before_hello_reports_exit_code_and_stderr():
    with pytest.raises(ProtocolError) as caught:
        Session(child("exit_before_hello"), timeout=10)
    error = caught.value
    assert error.exit_code == 1
    assert "ExchangeOnlineManagement' was not loaded" in error.stderr_tail
    assert "exit code 1" in str(error) and "was not loaded" in str(error)


def test_hello_of_protocol_2_is_refused():
    with pytest.raises(ProtocolError) as caught:
        Session(child("protocol2_hello"), timeout=10)
    error = caught.value
    assert error.reason == "the child speaks protocol 2, this client speaks 1"
    assert json.loads(error.line)["protocol"] == 2


def test_non_json_line_is_a_protocol_error_and_kills_the_child():
    s = Session(child("non_json_reply"), timeout=10)
    pid = s.pid
    with pytest.raises(ProtocolError) as caught:
        s.call("Get-InboundConnector")
    assert caught.value.line == "Get-InboundConnector: <not json>"
    assert caught.value.command == "Get-InboundConnector"
    assert caught.value.reason.startswith("a line that is not JSON")
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
    assert wait_gone(pid)
    assert s.pid is None
    s.close()


def test_reply_with_the_wrong_id_is_never_returned():
    with Session(child("wrong_id"), timeout=10) as s:
        pid = s.pid
        with pytest.raises(ProtocolError) as caught:
            s.call("Get-TransportRule")
        assert caught.value.reason == "reply for id 101 while waiting for 1"
        assert json.loads(caught.value.line)["output"] == [{"Name": "not yours"}]
        assert wait_gone(pid)


def test_child_that_exits_mid_reply_reports_the_partial_line_and_exit_code():
    with Session(child("mid_reply_exit"), timeout=10) as s:
        with pytest.raises(ProtocolError) as caught:
            s.call("Get-InboundConnector")
    error = caught.value
    assert error.reason == "the child exited in the middle of the reply"
    assert error.line == '{"id": 1, "ok": true, "output": [{"Na'
    assert error.exit_code == 3


def test_stray_text_on_stdout_is_a_protocol_error():
    with Session(child("stray_text"), timeout=10) as s:
        with pytest.raises(ProtocolError) as caught:
            s.call("Import-Module", {"Name": "seppmail365cloud"})
    assert caught.value.line == ("WARNING: The names of some imported commands "
                                 "include unapproved verbs.")


def test_bytes_that_are_not_utf8_are_a_protocol_error():
    with Session(child("bad_utf8"), timeout=10) as s:
        with pytest.raises(ProtocolError) as caught:
            s.call("Get-AcceptedDomain")
    assert caught.value.reason == "the child wrote bytes that are not UTF-8"
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


def test_timeout_kills_the_child_and_the_next_call_gets_its_own_reply():
    with Session(child("hang"), timeout=10) as s:
        first_pid = s.pid
        # The child would answer "first" after 1 s: a reply means no timeout.
        with pytest.raises(SessionTimeout) as caught:
            s.call("Get-TransportRule", {"Seconds": 1, "Marker": "first"},
                   timeout=0.3)
        assert caught.value.command == "Get-TransportRule"
        assert caught.value.timeout == 0.3
        assert wait_gone(first_pid)

        # Past the moment the first child would have answered "first".
        time.sleep(1)
        reply = s.call("Get-TransportRule", {"Marker": "second"})
        assert reply.output == [{"Marker": "second"}]
        assert reply.id == 2
        assert s.pid != first_pid and s.hello["pid"] == s.pid
        assert s.starts == 2


def test_timeout_restart_runs_on_start_again():
    starts = []
    with Session(child("hang"), timeout=10,
                 on_start=lambda s: starts.append(s.pid)) as s:
        with pytest.raises(SessionTimeout):
            s.call("Get-AcceptedDomain", {"Seconds": 5}, timeout=0.2)
        s.call("Get-AcceptedDomain")
    assert len(starts) == 2 and starts[0] != starts[1]


def test_thirty_megabyte_reply_passes_unchanged():
    with Session(child("big_reply"), timeout=60) as s:
        output = s.invoke("Get-TransportRule", Megabytes=31)
    text = "Grüße aus Zürich – 東京 – 🙂 " * 8
    assert len(output) > 80_000
    assert all(r["Comment"] == text for r in output)
    assert [r["Index"] for r in output] == list(range(len(output)))
    assert len(json.dumps(output, ensure_ascii=False).encode()) > 30_000_000


def test_grandchild_does_not_outlive_a_timeout():
    s = Session(child("grandchild_hang"), timeout=10)
    pid, grandchild = s.pid, s.hello["grandchild"]
    assert not gone(grandchild)
    with pytest.raises(SessionTimeout):
        s.call("Get-InboundConnector", timeout=0.3)
    assert wait_gone(pid) and wait_gone(grandchild)
    s.close()


def test_grandchild_does_not_outlive_close():
    s = Session(child("grandchild_hang"), timeout=10)
    pid, grandchild = s.pid, s.hello["grandchild"]
    s.close()
    assert wait_gone(pid) and wait_gone(grandchild)


def test_keyboard_interrupt_during_a_call_kills_the_child_and_propagates():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    s = Session(child("hang"), timeout=10)
    pid = s.pid
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        # The child answers after 30 s, beyond the session's 10 s timeout: only
        # the interrupt can end this call with KeyboardInterrupt.
        with pytest.raises(KeyboardInterrupt):
            s.call("Get-TransportRule", {"Seconds": 30})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert wait_gone(pid)
    assert s.pid is None
    assert s.invoke("Get-TransportRule", Marker="after") == [{"Marker": "after"}]
    s.close()


def test_child_that_never_says_hello_times_out_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(SessionTimeout) as caught:
        Session(child("no_hello") + [str(pid_file)], timeout=1)
    assert caught.value.command == "hello" and caught.value.timeout == 1
    assert str(caught.value) == ("hello did not answer within 1 s; the PowerShell "
                                 "child was stopped")
    assert wait_gone(int(pid_file.read_text()))


def test_interrupting_a_kernel_in_a_call_ends_the_child_and_the_kernel_lives_on():
    # The child runs in its own session, so the SIGINT that interrupts a kernel
    # never reaches it: the Session must end it.
    caller = subprocess.Popen(
        [sys.executable, str(CHILDREN / "interrupted_caller.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pid = int(caller.stdout.readline())
        assert not gone(pid)
        time.sleep(0.3)     # let the caller reach its call
        caller.send_signal(signal.SIGINT)
        assert caller.stdout.readline() == "interrupted\n"
        assert wait_gone(pid)
        assert caller.poll() is None
        caller.stdin.close()
        assert caller.wait(timeout=30) == 0
    finally:
        caller.kill()
        caller.wait(timeout=30)
        for stream in (caller.stdin, caller.stdout, caller.stderr):
            stream.close()
