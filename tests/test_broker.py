"""One session shared by a run's notebooks (runbook.powershell.broker, issue 8.6)."""

import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from test_session import wait_gone

from runbook.exchange import ExchangeOnline
from runbook.powershell import (CommandFailed, CommandRefused, ObjectNotFound,
                                PowerShellError, ProtocolError, Session, SessionTimeout,
                                sandbox_command)
from runbook.powershell.broker import (BrokerUnavailable, RemoteSession, SessionBroker,
                                       serve)

CHILDREN = Path(__file__).parent / "fault_children"
NOBODY = 65534

NOT_FOUND = {
    "message": "Ex6F9304|Microsoft.Exchange.Configuration.Tasks."
               "ManagementObjectNotFoundException|The operation couldn't be performed "
               "because object 'nosuch' couldn't be found on "
               "'ZRAP278A001DC01.EURP278A001.PROD.OUTLOOK.COM'.",
    "category": "NotSpecified", "error_id": "ManagementObjectNotFoundException",
    "target": None,
}


def child(name: str) -> list[str]:
    return [sys.executable, str(CHILDREN / f"{name}.py")]


@pytest.fixture
def echo_broker():
    with Session(child("echo"), timeout=10) as session:
        with SessionBroker(session) as broker:
            yield broker


@pytest.fixture
def remote(echo_broker):
    with RemoteSession(echo_broker.path) as remote:
        yield remote


# -- the conversation -------------------------------------------------------


def test_remote_call_reaches_the_child_with_command_parameters_and_confirmation(
        remote):
    reply = remote.call("Remove-InboundConnector", {"Identity": "x"}, confirmed=True)
    assert reply.output == [{"request": {"id": 1, "command": "Remove-InboundConnector",
                                         "parameters": {"Identity": "x"},
                                         "confirmed": True}}]
    assert reply.errors == [] and reply.warnings == [] and reply.duration_ms == 0.1


def test_remote_session_shows_the_shared_childs_hello(echo_broker, remote):
    assert remote.hello == echo_broker.session.hello
    assert remote.host == "fault"
    assert remote.versions["ExchangeOnlineManagement"] == "3.9.0"
    assert remote.pid == echo_broker.session.pid
    assert remote.timeout == 10.0


def test_invoke_returns_the_output_records(remote):
    assert remote.invoke("Get-X", Output=[{"Name": "a"}, {"Name": "b"}]) == [
        {"Name": "a"}, {"Name": "b"}]


def test_warnings_come_back_with_the_reply(remote):
    reply = remote.call("Get-X", {"Warnings": ["throttled: wait 2 s"]})
    assert reply.warnings == ["throttled: wait 2 s"]


def test_two_clients_share_one_child_and_its_request_ids(echo_broker):
    with RemoteSession(echo_broker.path) as first, \
            RemoteSession(echo_broker.path) as second:
        a = first.call("Get-A").output[0]["request"]["id"]
        b = second.call("Get-B").output[0]["request"]["id"]
        assert (a, b) == (1, 2)       # one session numbered both requests
        assert first.pid == second.pid == echo_broker.session.pid


def test_concurrent_clients_get_their_own_replies_one_request_at_a_time():
    with Session(child("hang"), timeout=10) as session, SessionBroker(session) as b:
        replies = {}

        def ask(marker):
            with RemoteSession(b.path) as remote:
                replies[marker] = remote.invoke("Get-X", Seconds=0.3, Marker=marker)

        threads = [threading.Thread(target=ask, args=(m,)) for m in ("one", "two")]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        elapsed = time.monotonic() - started
    assert replies == {"one": [{"Marker": "one"}], "two": [{"Marker": "two"}]}
    assert elapsed >= 0.6             # the child answered one after the other


# -- errors arrive as the same classes -----------------------------------------


def test_error_records_arrive_as_command_failed(remote):
    record = {"message": "boom", "category": "InvalidOperation", "error_id": "Boom",
              "target": None}
    with pytest.raises(CommandFailed) as caught:
        remote.call("Set-X", {"Errors": [record]})
    assert type(caught.value) is CommandFailed
    assert caught.value.errors == [record] and caught.value.error_id == "Boom"
    assert str(caught.value) == "Set-X failed: boom"


def test_missing_identity_arrives_as_object_not_found(remote):
    with pytest.raises(ObjectNotFound) as caught:
        remote.call("Get-InboundConnector", {"Errors": [NOT_FOUND]})
    assert caught.value.identity == "nosuch"


def test_timeout_arrives_as_session_timeout_and_the_next_call_has_a_fresh_child():
    with Session(child("hang"), timeout=10) as session, SessionBroker(session) as b:
        with RemoteSession(b.path) as remote:
            first_pid = remote.pid
            with pytest.raises(SessionTimeout) as caught:
                remote.call("Get-X", {"Seconds": 5, "Marker": "late"}, timeout=0.5)
            assert caught.value.command == "Get-X" and caught.value.timeout == 0.5
            assert "did not answer within 0.5 s" in str(caught.value)
            reply = remote.call("Get-X", {"Marker": "next"})
            assert reply.output == [{"Marker": "next"}]     # never the late one
            assert remote.pid != first_pid                  # hello came along


def test_protocol_error_arrives_as_protocol_error_with_its_reason():
    with Session(child("wrong_id"), timeout=10) as session, SessionBroker(session) as b:
        with RemoteSession(b.path) as remote:
            with pytest.raises(ProtocolError) as caught:
                remote.call("Get-X")
    assert caught.value.reason == "reply for id 101 while waiting for 1"
    assert caught.value.command == "Get-X"


def test_parameters_that_are_not_json_raise_type_error_and_send_nothing(remote):
    with pytest.raises(TypeError, match="parameters must be JSON data"):
        remote.call("Get-X", {"When": object()})
    assert remote.call("Get-Y").output[0]["request"]["id"] == 1


def test_closed_remote_session_refuses_calls_and_the_child_serves_on(echo_broker):
    remote = RemoteSession(echo_broker.path)
    remote.close()
    with pytest.raises(PowerShellError, match="Get-X: the session is closed"):
        remote.call("Get-X")
    with RemoteSession(echo_broker.path) as other:
        assert other.call("Get-X").output
    assert echo_broker.session.pid is not None


# -- the socket ----------------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory_that_close_removes():
    with Session(child("echo"), timeout=10) as session:
        broker = SessionBroker(session)
        mode = stat.S_IMODE(os.stat(broker.path).st_mode)
        folder_mode = stat.S_IMODE(os.stat(broker.path.parent).st_mode)
        assert stat.S_ISSOCK(os.stat(broker.path).st_mode)
        assert (oct(mode), oct(folder_mode)) == ("0o600", "0o700")
        broker.close()
        assert not broker.path.parent.exists()


def test_a_closed_broker_is_unavailable_and_hangs_up_on_its_clients():
    with Session(child("echo"), timeout=10) as session:
        broker = SessionBroker(session)
        remote = RemoteSession(broker.path)
        broker.close()
        with pytest.raises(ProtocolError, match="closed the connection"):
            remote.call("Get-X")
        with pytest.raises(BrokerUnavailable) as caught:
            RemoteSession(broker.path)
    assert caught.value.path == str(broker.path)
    assert caught.value.reason == "No such file or directory"


def test_a_socket_directory_open_to_others_is_refused(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with Session(child("echo"), timeout=10) as session:
        with pytest.raises(PermissionError, match="open to others"):
            SessionBroker(session, folder / "session.sock")


def test_a_given_socket_path_gets_a_private_directory(tmp_path):
    path = tmp_path / "run" / "s.sock"
    with Session(child("echo"), timeout=10) as session:
        with SessionBroker(session, path):
            assert oct(stat.S_IMODE(os.stat(path.parent).st_mode)) == "0o700"
            with RemoteSession(path) as remote:
                assert remote.call("Get-X").output
        assert not path.exists() and path.parent.exists()


def _as_nobody(action) -> int:
    """Run `action()` in a forked child as uid 65534; its exit status."""
    pid = os.fork()
    if pid == 0:                                       # the child
        code = 99
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = action()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become "
                               "another user in a forked child")


@root_only
def test_another_user_cannot_even_reach_the_socket(echo_broker):
    def connect() -> int:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(str(echo_broker.path))
        except PermissionError:
            return 13
        return 0

    assert _as_nobody(connect) == 13


@root_only
def test_another_user_is_refused_by_peer_credentials_when_permissions_are_loose(
        echo_broker):
    # The second lock: even with the first one (file modes) opened up, the
    # broker reads the peer's uid and hangs up with its reason.
    os.chmod(echo_broker.path.parent, 0o777)
    os.chmod(echo_broker.path, 0o777)

    def connect() -> int:
        try:
            RemoteSession(echo_broker.path)
        except BrokerUnavailable as exc:
            return 42 if f"runs as uid {NOBODY}; only uid 0" in exc.reason else 1
        return 0

    assert _as_nobody(connect) == 42
    with RemoteSession(echo_broker.path) as remote:   # its own user still gets in
        assert remote.call("Get-X").output


# -- with the sandbox tenant ---------------------------------------------------


@pytest.fixture
def contoso(make_tenant):
    return make_tenant("legacy-inline", propagation_delay_s=0)


def _connect(session) -> None:
    ExchangeOnline(session).connect("contoso.onmicrosoft.com")


def test_sandbox_tenant_is_connected_once_and_read_by_every_notebook(contoso):
    connects = []

    def connect(session):
        connects.append(session.pid)
        _connect(session)

    with serve(sandbox_command(contoso), timeout=30, connect=connect) as broker:
        for _ in range(2):                            # two notebooks, one after another
            with RemoteSession(broker.path) as remote:
                exo = ExchangeOnline(remote)
                info = exo.connection()
                names = sorted(c["Name"] for c in exo.inbound_connectors())
                assert info["State"] == "Connected"
                assert info["UserPrincipalName"] == "admin@contoso.onmicrosoft.com"
                assert "[SEPPmail.cloud] Inbound-InLine" in names
                assert remote.hello["host"] == "sandbox" and "dns" in remote.hello
    assert len(connects) == 1


def test_sandbox_errors_arrive_as_the_same_classes(contoso):
    with serve(sandbox_command(contoso), timeout=30, connect=_connect) as broker:
        with RemoteSession(broker.path) as remote:
            with pytest.raises(ObjectNotFound) as missing:
                remote.call("Get-InboundConnector", {"Identity": "nosuch"})
            with pytest.raises(CommandRefused) as refused:
                remote.call("Remove-InboundConnector", {"Identity": "x"})
    assert missing.value.identity == "nosuch"
    assert refused.value.error_id == "RunbookConfirmationRequired"


def test_serve_connects_again_after_the_child_restarts():
    connects = []

    def connect(session):
        connects.append(session.pid)
        session.call("Connect-ExchangeOnline", {"Organization": "x.onmicrosoft.com"})

    with serve(child("hang"), timeout=10, connect=connect) as broker:
        with RemoteSession(broker.path) as remote:
            with pytest.raises(SessionTimeout):
                remote.call("Get-X", {"Seconds": 5}, timeout=0.3)
            remote.call("Get-X")
            assert len(connects) == 2 and connects[0] != connects[1]
            assert remote.pid == connects[1]


def test_serve_closes_the_child_when_connecting_fails():
    started = []

    def connect(session):
        started.append(session.pid)
        raise CommandFailed("Connect-ExchangeOnline", [{"message": "AADSTS700016"}])

    with pytest.raises(CommandFailed):
        with serve(child("echo"), timeout=10, connect=connect):
            pass
    assert wait_gone(started[0])


def test_broker_hello_and_refusal_lines_are_json(echo_broker):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(str(echo_broker.path))
    hello = json.loads(client.makefile("rb").readline())
    client.close()
    assert hello["hello"] == "runbook-broker" and hello["protocol"] == 1
    assert hello["child"]["host"] == "fault" and hello["timeout"] == 10.0


# -- a step of a chain run joins the run's session ------------------------------


CONTOSO = dict(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
               region="ch", routing="inline")


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The sandbox children's call log: (pid, command) of every request."""
    from runbook.sandbox.server import CALL_LOG_ENV

    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALL_LOG_ENV, str(path))

    def read() -> list[tuple[int, str]]:
        if not path.exists():
            return []
        return [(c["pid"], c["command"]) for c in map(json.loads,
                                                      path.read_text().splitlines())]

    return read


def _run_of(contoso, reports):
    from runbook import params
    from runbook.audit import RunRecord

    p = params.validate(**CONTOSO, sandbox_state=str(contoso))
    return RunRecord.create(reports, "contoso", parameters=p.as_dict(),
                            backend="sandbox", sandbox_state=str(contoso))


def _namespace(record, contoso, **values) -> dict:
    return dict(CONTOSO, sandbox_state=str(contoso), run_dir=str(record.path),
                **values)


def test_a_step_of_a_run_uses_the_shared_session_without_connecting_again(
        contoso, reports, calls, monkeypatch):
    from runbook.notebook import open_step
    from runbook.powershell.broker import SOCKET_ENV

    record = _run_of(contoso, reports)
    with serve(sandbox_command(contoso), timeout=30, connect=_connect) as broker:
        monkeypatch.setenv(SOCKET_ENV, str(broker.path))
        ctx = open_step("01-prerequisites", _namespace(record, contoso))
        assert isinstance(ctx.session, RemoteSession)
        assert ctx.connection["UserPrincipalName"] == "admin@contoso.onmicrosoft.com"
        assert ctx.dns_nameserver == broker.session.hello["dns"]
        assert ctx.session.hello["openid"] == broker.session.hello["openid"]
        assert ctx.session.host == "sandbox"
        ctx.close()
        assert broker.session.pid is not None          # the shared child lives on
        shared_pid = broker.session.pid
    assert calls() == [(shared_pid, "Connect-ExchangeOnline"),
                       (shared_pid, "Get-ConnectionInformation"),
                       (shared_pid, "Get-ConnectionInformation"),
                       (shared_pid, "Get-InstalledModule")]


def test_a_later_step_records_the_module_versions_installed_since_the_hello(
        contoso, reports, monkeypatch):
    from runbook.exchange import ExchangeOnline
    from runbook.notebook import open_step
    from runbook.powershell.broker import SOCKET_ENV

    record = _run_of(contoso, reports)
    with serve(sandbox_command(contoso), timeout=30, connect=_connect) as broker:
        monkeypatch.setenv(SOCKET_ENV, str(broker.path))
        assert broker.session.versions["seppmail365cloud"] == ["1.2.5"]
        with RemoteSession(broker.path) as remote:     # what step 2 does
            ExchangeOnline(remote, confirmed=True).install_module("2.0.2")
        ctx = open_step("03-cleanup", _namespace(record, contoso))
        ctx.close()
    versions = [e["data"] for e in record.events() if e["kind"] == "versions"]
    assert versions[-1]["step"] == "03-cleanup"
    assert versions[-1]["seppmail365cloud"] == ["2.0.2", "1.2.5"]
    assert versions[-1]["host"] == "sandbox" and versions[-1]["pwsh"] == "7.5.4"


def test_a_step_with_a_dead_socket_opens_and_connects_a_session_of_its_own(
        contoso, reports, calls, monkeypatch, tmp_path, caplog):
    from runbook.notebook import open_step
    from runbook.powershell.broker import SOCKET_ENV

    record = _run_of(contoso, reports)
    dead = tmp_path / "gone" / "session.sock"
    monkeypatch.setenv(SOCKET_ENV, str(dead))
    ctx = open_step("01-prerequisites", _namespace(record, contoso))
    own_pid = ctx.session.pid
    ctx.close()
    assert isinstance(ctx.session, Session)
    assert [c for _, c in calls()] == ["Connect-ExchangeOnline",
                                       "Get-ConnectionInformation"]
    assert {pid for pid, _ in calls()} == {own_pid}
    assert (f"no shared PowerShell session at {dead}: No such file or directory; "
            "this step opens a session of its own") in caplog.text


def test_a_notebook_run_alone_ignores_the_socket_variable(contoso, reports, calls,
                                                          monkeypatch):
    from runbook.notebook import open_step
    from runbook.powershell.broker import SOCKET_ENV

    with serve(sandbox_command(contoso), timeout=30, connect=_connect) as broker:
        monkeypatch.setenv(SOCKET_ENV, str(broker.path))
        ctx = open_step("01-prerequisites", dict(CONTOSO, sandbox_state=str(contoso)))
        ctx.close()
        assert isinstance(ctx.session, Session)
        assert ctx.session.pid != broker.session.pid
    assert [c for _, c in calls()].count("Connect-ExchangeOnline") == 2


def test_remote_session_logs_the_tenants_warnings_where_the_call_was_made(remote,
                                                                          caplog):
    remote.call("Get-X", {"Warnings": ["throttled: wait 2 s"]})
    found = [r for r in caplog.records if r.name == "runbook.powershell.broker"]
    assert [(r.levelname, r.getMessage()) for r in found] == [
        ("WARNING", "Get-X: throttled: wait 2 s")]


# -- the relay: replies pass the broker undecoded ------------------------------


TRICKY_OUTPUT = [{"Name": "a", "errors": [{"message": "x"}], "warnings": ["errors"],
                  "duration_ms": 9},
                 {"Name": 'quote " and "errors": inside', "Comments": "ünïcødé 🙂"}]


@pytest.mark.parametrize("name", ["echo", "reordered"])
def test_the_relay_hands_on_the_reply_and_reads_only_its_ok_errors_and_warnings(name):
    # echo writes protocol order (the fast path: the output is not decoded);
    # reordered writes it backwards (decoded whole, then handed on).
    with Session(child(name), timeout=10) as session:
        relayed = session.relay("Get-Thing", {"Output": TRICKY_OUTPUT,
                                              "Warnings": ["errors", "w2"]})
        assert relayed.ok is True
        assert relayed.warnings == ["errors", "w2"] and relayed.errors == []
        assert json.loads('{"id": 0,' + relayed.body)["output"] == TRICKY_OUTPUT
        failed = session.relay("Get-Thing", {"Errors": [NOT_FOUND]})
        assert failed.ok is False and failed.errors == [NOT_FOUND]


@pytest.mark.parametrize("name", ["echo", "reordered"])
def test_a_remote_call_gets_the_childs_reply_whatever_its_member_order(name):
    with Session(child(name), timeout=10) as session, \
            SessionBroker(session) as broker, RemoteSession(broker.path) as remote:
        reply = remote.call("Get-Thing", {"Output": TRICKY_OUTPUT, "Warnings": ["w"]})
        assert reply.output == TRICKY_OUTPUT and reply.warnings == ["w"]
        assert reply.id == 1
        with pytest.raises(ObjectNotFound):
            remote.call("Get-Thing", {"Errors": [NOT_FOUND]})


def test_a_relayed_reply_whose_output_is_not_json_is_a_protocol_error_for_the_caller():
    with Session(child("garbled_output"), timeout=10) as session, \
            SessionBroker(session) as broker, RemoteSession(broker.path) as remote:
        with pytest.raises(ProtocolError, match="not JSON"):
            remote.call("Get-Thing")
        # The reply was one whole line with its own id: the conversation is
        # still in step, and the shared child answers the next call.
        assert remote.invoke("Get-Thing")[0]["request"]["command"] == "Get-Thing"
        assert session.starts == 1


TAIL = '"errors": [], "warnings": [], "duration_ms": 1.5}'


@pytest.mark.parametrize("raw, reason", [
    # An id of 5,000 digits: Python refuses to read such a number.
    ('{"id": 1' + "0" * 5000 + ', "ok": true, "output": [], ' + TAIL, "not JSON"),
    # A leading zero is no JSON number, even where the digits match.
    ('{"id": 0ID, "ok": true, "output": [], ' + TAIL, "not JSON"),
    ('{"id": "ID", "ok": true, "output": [], ' + TAIL, "reply for id '"),
])
@pytest.mark.parametrize("relayed", [False, True])
def test_a_reply_with_an_unreadable_id_is_a_protocol_error_either_way(raw, reason,
                                                                        relayed):
    with Session(child("raw_reply"), timeout=10) as session:
        call = session.relay if relayed else session.call
        with pytest.raises(ProtocolError, match=reason):
            call("Get-Thing", {"Raw": raw})
        assert session.pid is None          # the child is gone; the next starts anew


def test_a_relayed_reply_with_a_duration_that_is_no_number_still_arrives():
    raw = '{"id": ID, "ok": true, "output": [{"Name": "a"}], "errors": [], ' \
          '"warnings": [], "duration_ms": "fast"}'
    with Session(child("raw_reply"), timeout=10) as session, \
            SessionBroker(session) as broker, RemoteSession(broker.path) as remote:
        reply = remote.call("Get-Thing", {"Raw": raw})
        assert reply.output == [{"Name": "a"}]
        assert reply.duration_ms == 0.0
