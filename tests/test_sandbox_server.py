"""The sandbox child program: protocol 1 as docs/internals.md pins it."""

import io
import json
import os
import subprocess
import sys

import dns.message
import dns.query
import dns.rdatatype
import pytest

from runbook.sandbox import registry, scenarios, server, state
from runbook.sandbox.tenant import Tenant

CHILD_TIMEOUT_S = 20


def run_child(path, requests, timeout=CHILD_TIMEOUT_S):
    """Run one child over `requests`; returns (hello, responses, process)."""
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                    for r in requests)
    done = subprocess.run([sys.executable, "-m", "runbook.sandbox", "--state",
                           str(path)], input=lines.encode("utf-8"),
                          capture_output=True, timeout=timeout)
    messages = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    return messages[0], messages[1:], done


def connect(tenant="contoso"):
    return {"id": 1, "command": "Connect-ExchangeOnline",
            "parameters": {"Organization": f"{tenant}.onmicrosoft.com"}}


@pytest.fixture
def inline_file(tmp_path):
    path = tmp_path / "contoso.json"
    state.save(path, scenarios.build("legacy-inline"))
    return path


def test_hello_line_announces_host_versions_and_dns(inline_file):
    """internals.md "Protocol 1": the first line, with dns for the sandbox."""
    hello, responses, done = run_child(inline_file, [])
    assert done.returncode == 0
    assert hello["hello"] == "runbook-bridge" and hello["protocol"] == 1
    assert hello["host"] == "sandbox"
    assert hello["versions"] == {"pwsh": "7.5.4", "edition": "Core",
                                 "ExchangeOnlineManagement": "3.9.0",
                                 "seppmail365cloud": ["1.2.5"]}
    host, port = hello["dns"].split(":")
    assert host == "127.0.0.1" and 0 < int(port) < 65536
    assert responses == []


def test_hello_lists_installed_module_versions_newest_first(tmp_path):
    """internals.md: versions.seppmail365cloud newest first, [] when none."""
    path = tmp_path / "t.json"
    state.save(path, scenarios.build(
        "legacy-inline", module_installed=["1.2.5", "1.3.0", "2.0.2",
                                           "1.3.0-preview2", "1.3.0-preview1"]))
    hello, _, _ = run_child(path, [])
    assert hello["versions"]["seppmail365cloud"] == [
        "2.0.2", "1.3.0", "1.3.0-preview2", "1.3.0-preview1", "1.2.5"]
    state.save(path, scenarios.build("clean"))
    assert run_child(path, [])[0]["versions"]["seppmail365cloud"] == []


def test_version_order_puts_previews_before_their_release():
    """seppmail365cloud.md §0: 1.3.0-preview1 < preview2 < 1.3.0 < 1.3.1."""
    ordered = ["1.2.5", "1.3.0-preview1", "1.3.0-preview2", "1.3.0", "1.3.1",
               "1.3.10", "2.0.2"]
    assert sorted(reversed(ordered), key=server.version_key) == ordered


def test_the_announced_dns_server_answers_from_the_state(tmp_path):
    """design.md "The sandbox": the tenant's DNS is real DNS on 127.0.0.1."""
    path = tmp_path / "t.json"
    state.save(path, scenarios.build("legacy-inline"))
    child = subprocess.Popen([sys.executable, "-m", "runbook.sandbox", "--state",
                              str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        hello = json.loads(child.stdout.readline())
        host, port = hello["dns"].split(":")
        query = dns.message.make_query("contoso.ch.", dns.rdatatype.MX)
        answer = dns.query.udp(query, host, port=int(port), timeout=2)
        assert [r.to_text() for r in answer.answer[0]] == [
            "10 contoso-ch.gate.seppmail.cloud."]
    finally:
        child.stdin.close()
        assert child.wait(timeout=CHILD_TIMEOUT_S) == 0
        child.stdout.close()
        child.stderr.close()


def test_responses_carry_output_errors_warnings_and_duration(inline_file):
    """internals.md "Response": id echoed, output always a list, ok by errors."""
    _, [first, second], _ = run_child(inline_file, [
        connect(), {"id": 2, "command": "Get-AcceptedDomain", "parameters": {}}])
    assert first == {"id": 1, "ok": True, "output": [], "errors": [],
                     "warnings": [], "duration_ms": first["duration_ms"]}
    assert second["id"] == 2 and second["ok"] is True
    assert len(second["output"]) == 3
    assert isinstance(second["duration_ms"], float)


def test_command_off_the_allow_list_is_refused(inline_file):
    """internals.md "Refusals": RunbookCommandNotAllowed, PermissionDenied."""
    _, [reply], _ = run_child(inline_file, [
        {"id": 9, "command": "Remove-Mailbox", "parameters": {"Identity": "x"}}])
    assert reply["ok"] is False
    assert reply["errors"] == [{
        "message": "The command 'Remove-Mailbox' is not on the runbook's allow-list.",
        "category": "PermissionDenied", "error_id": "RunbookCommandNotAllowed",
        "target": "Remove-Mailbox"}]


def test_unconfirmed_mutation_is_refused_and_runs_nothing(inline_file):
    """internals.md "Refusals": RunbookConfirmationRequired; nothing ran."""
    before = inline_file.read_bytes()
    _, [_, reply], _ = run_child(inline_file, [connect(), {
        "id": 2, "command": "Remove-InboundConnector",
        "parameters": {"Identity": "[SEPPmail.cloud] Inbound-InLine"}}])
    assert reply["errors"][0]["error_id"] == "RunbookConfirmationRequired"
    assert reply["errors"][0]["category"] == "PermissionDenied"
    assert inline_file.read_bytes() == before


def test_import_of_another_module_is_refused(inline_file):
    """commands.IMPORTABLE_MODULES: Import-Module loads only the two modules."""
    _, [reply], _ = run_child(inline_file, [{
        "id": 3, "command": "Import-Module", "parameters": {"Name": "PSReadLine"}}])
    assert reply["errors"][0]["error_id"] == "RunbookCommandNotAllowed"


def test_allowed_but_unimplemented_command_says_so(inline_file, monkeypatch):
    """The brief: never a silent empty answer for a missing command."""
    monkeypatch.delitem(registry.COMMANDS, "get-arcconfig")
    tenant = Tenant(state.load(inline_file))
    reply = server.answer(tenant, {"id": 4, "command": "Get-ArcConfig",
                                   "parameters": {}})
    assert reply["ok"] is False
    assert reply["errors"] == [{"message": "The sandbox does not implement"
                                           " 'Get-ArcConfig'.",
                                "category": "NotImplemented",
                                "error_id": "SandboxNotImplemented",
                                "target": "Get-ArcConfig"}]


def test_confirmed_mutation_is_saved_and_seen_by_the_next_child(inline_file):
    """design.md: state survives from one notebook (child) to the next."""
    _, [_, removed], _ = run_child(inline_file, [connect(), {
        "id": 2, "command": "Remove-InboundConnector", "confirmed": True,
        "parameters": {"Identity": "[SEPPmail.cloud] Inbound-InLine"}}])
    assert removed["ok"] is True
    assert os.stat(inline_file).st_mode & 0o777 == 0o600
    _, [_, listed], _ = run_child(inline_file, [connect(), {
        "id": 2, "command": "Get-InboundConnector", "parameters": {}}])
    assert [c["Name"] for c in listed["output"]] == [
        c["Name"] for c in scenarios.build("legacy-inline")["inbound_connectors"]
        if not c["Name"].startswith("[SEPPmail")]
    assert state.load(inline_file)["changes"][0]["command"] == \
        "Remove-InboundConnector"


def test_reads_do_not_rewrite_the_state(inline_file):
    """Save only after a request that changed the tenant."""
    before = os.stat(inline_file).st_mtime_ns, inline_file.read_bytes()
    run_child(inline_file, [connect(), {"id": 2, "command": "Get-TransportRule",
                                        "parameters": {}}])
    assert (os.stat(inline_file).st_mtime_ns, inline_file.read_bytes()) == before


def test_bad_request_lines_get_an_error_and_the_session_goes_on(inline_file):
    """One JSON object per line; a broken line does not end the session."""
    _, [bad, good], done = run_child(inline_file, [
        "{not json", {"id": 5, "command": "Get-ConnectionInformation",
                      "parameters": {}}])
    assert bad["id"] is None and bad["errors"][0]["error_id"] == "RunbookBadRequest"
    assert good["id"] == 5 and good["ok"] is True
    assert done.returncode == 0


def test_non_ascii_travels_as_utf8(inline_file):
    """internals.md: UTF-8 JSON; names with umlauts come back intact."""
    _, [_, created, listed], _ = run_child(inline_file, [connect(), {
        "id": 2, "command": "New-InboundConnector", "confirmed": True,
        "parameters": {"Name": "Zürich Partner ✓", "SenderDomains": ["zürich.ch"]}},
        {"id": 3, "command": "Get-InboundConnector",
         "parameters": {"Identity": "zürich partner ✓"}}])
    assert created["ok"] is False  # IDN domains must be given in ASCII form
    assert "zürich.ch" in created["errors"][0]["message"]
    assert listed["errors"][0]["target"] == "zürich partner ✓"


def test_stray_prints_go_to_stderr_not_the_protocol(inline_file, monkeypatch, capsys):
    """stdout carries protocol lines only (internals.md "Protocol 1")."""
    def noisy(tenant, params):
        print("diagnostic chatter")
        return [{"Name": "quiet"}]

    monkeypatch.setitem(registry.COMMANDS, "get-accepteddomain", noisy)
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps(
        {"id": 1, "command": "Get-AcceptedDomain", "parameters": {}}).encode() + b"\n"))
    out = io.BytesIO()
    stdout = io.TextIOWrapper(out, write_through=True)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert server.main(["--state", str(inline_file)]) == 0
    lines = out.getvalue().decode("utf-8").splitlines()
    assert [sorted(json.loads(line)) for line in lines] == [
        ["dns", "hello", "host", "openid", "protocol", "trace", "versions"],
        ["duration_ms", "errors", "id", "ok", "output", "warnings"]]
    assert "diagnostic chatter" in capsys.readouterr().err


def test_unreadable_state_file_exits_2_with_the_reason(tmp_path):
    """A child without a tenant says why on stderr and writes no hello."""
    path = tmp_path / "broken.json"
    path.write_text("{}", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "runbook.sandbox", "--state",
                           str(path)], input=b"", capture_output=True,
                          timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 2 and done.stdout == b""
    assert b"not a schema-1 sandbox state" in done.stderr


def test_a_sandbox_fault_is_an_error_record_not_a_crash(inline_file, monkeypatch):
    """A bug in a simulated cmdlet answers SandboxInternalError; the child lives."""
    def broken(tenant, params):
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(registry.COMMANDS, "get-arcconfig", broken)
    reply = server.answer(Tenant(state.load(inline_file)),
                          {"id": 1, "command": "Get-ArcConfig", "parameters": {}})
    assert reply["errors"][0]["error_id"] == "SandboxInternalError"


def test_a_reply_read_from_kept_texts_equals_the_plain_encoding():
    tenant = scenarios.build("legacy-parallel")
    texts = server.ObjectTexts(tenant)
    rules = tenant["transport_rules"]
    message = {"id": 7, "ok": True, "output": rules, "errors": [],
               "warnings": ["só 1000 itens"], "duration_ms": 1.5}
    expected = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    assert texts.reply(message) == expected
    assert texts.reply(message) == expected            # the second time from the texts
    # An object that is no part of the tenant (a filtered copy) is encoded anew.
    copies = [dict(r, Name="copy") for r in rules]
    message["output"] = copies
    assert json.loads(texts.reply(message))["output"][0]["Name"] == "copy"


def test_kept_texts_are_forgotten_when_the_tenant_changes_so_a_read_sees_the_change(
        inline_file):
    get = {"id": 2, "command": "Get-TransportRule", "parameters": {}}
    name = scenarios.build("legacy-inline")["transport_rules"][0]["Name"]
    _, [_, before, changed, after], _ = run_child(inline_file, [
        connect(), get,
        {"id": 3, "command": "Set-TransportRule", "confirmed": True,
         "parameters": {"Identity": name, "Comments": "changed by the test"}},
        dict(get, id=4)])
    assert changed["ok"] is True, changed
    assert [r["Comments"] for r in before["output"]][0] != "changed by the test"
    assert after["output"][0]["Comments"] == "changed by the test"
    assert [r["Name"] for r in after["output"]] == [r["Name"] for r in before["output"]]
