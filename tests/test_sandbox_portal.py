"""The admin portal stand-in and the `runbook sandbox` subcommands.

seppmail365cloud.md §5.1 / §10 step 4: slash-named connectors are renamed
and deleted in the portal; exchange-objects.md §9: a connector a rule routes
through cannot be removed or renamed, in the portal either.
"""

from datetime import datetime, timedelta, timezone

import pytest

from runbook.sandbox import cli, portal, scenarios, state, trace
from runbook.sandbox.tenant import Tenant

NOW = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
SLASH_IN = "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365"
SLASH_OUT = "[SEPPmail.cloud] ExO -> SEPPmail / MX:M365"


def slash_state():
    return scenarios.build("legacy-slash", now=NOW, propagation_delay_s=30)


def clock():
    return NOW


def names(objects):
    return [o["Name"] for o in objects]


def test_portal_rename_lets_powershell_remove_the_connector():
    """§10 step 4: rename in the portal, then it can be removed by name."""
    built = slash_state()
    renamed = portal.rename_connector(built, SLASH_IN, "[SEPPmail.cloud] old inbound",
                                      clock=clock)
    assert renamed["Identity"] == "[SEPPmail.cloud] old inbound"
    assert renamed["DistinguishedName"].startswith("CN=[SEPPmail.cloud] old inbound,")
    tenant = Tenant(built, clock=clock)
    tenant.invoke("Connect-ExchangeOnline", Organization="tailspin.onmicrosoft.com")
    tenant.invoke("Remove-InboundConnector", Identity="[SEPPmail.cloud] old inbound")
    assert SLASH_IN not in names(built["inbound_connectors"])


def test_portal_delete_removes_a_slash_named_connector():
    """§5.1: the portal deletes what PowerShell cannot."""
    built = slash_state()
    deleted = portal.delete_connector(built, SLASH_IN.lower(), clock=clock)
    assert deleted["Name"] == SLASH_IN
    assert SLASH_IN not in names(built["inbound_connectors"])
    change = built["changes"][-1]
    assert (change["command"], change["target"], change["at"]) == (
        "Portal: delete connector", SLASH_IN, "2026-03-02T08:00:00Z")


def test_portal_refuses_to_delete_a_connector_a_rule_routes_through():
    """§9: rules first, also in the portal."""
    built = slash_state()
    with pytest.raises(portal.PortalError, match="can't be deleted because"
                                                 " transport rule"):
        portal.delete_connector(built, SLASH_OUT, clock=clock)
    with pytest.raises(portal.PortalError, match="can't be renamed"):
        portal.rename_connector(built, SLASH_OUT, "x", clock=clock)
    for rule in [r["Name"] for r in built["transport_rules"]
                 if r["RouteMessageOutboundConnector"] == SLASH_OUT]:
        built["transport_rules"] = [r for r in built["transport_rules"]
                                    if r["Name"] != rule]
    portal.delete_connector(built, SLASH_OUT, clock=clock)
    assert SLASH_OUT not in names(built["outbound_connectors"])


@pytest.mark.parametrize("new, fragment", [
    ("still / slashed", "can't contain '/' or '\\'"),
    ("[SEPPmail.cloud] SEPPmail -> ExO - MX:SEPPmail", "already exists"),
    ("x" * 65, "maximum length is 64"),
])
def test_portal_rename_checks_the_new_name(new, fragment):
    """§9 "Names" apply to the new name as well."""
    with pytest.raises(portal.PortalError, match=None) as caught:
        portal.rename_connector(slash_state(), SLASH_IN, new, clock=clock)
    assert fragment in str(caught.value)


def test_portal_unknown_connector_is_refused():
    """exchange-objects.md §9: a missing identity is an error, in the portal too."""
    with pytest.raises(portal.PortalError, match="no connector named 'nope'"):
        portal.delete_connector(slash_state(), "nope", clock=clock)


def test_portal_changes_take_effect_after_the_delay():
    """design.md "The sandbox", seppmail365cloud.md §10 step 6: portal changes
    take effect after the delay like any other."""
    built = slash_state()
    portal.delete_connector(built, SLASH_IN, clock=clock)
    before = trace.effective_connectors(built, NOW + timedelta(seconds=29))
    after = trace.effective_connectors(built, NOW + timedelta(seconds=30))
    assert SLASH_IN in names(before["inbound_connectors"])
    assert SLASH_IN not in names(after["inbound_connectors"])


# --- runbook sandbox … -------------------------------------------------------------

def test_cli_scenarios_lists_name_and_first_line(capsys):
    assert cli.main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(scenarios.names())
    assert lines[0].split()[0] == "legacy-inline"
    assert lines[0].endswith("Pre-CBC inline tenant set up by seppmail365cloud 1.2.5.")


def test_cli_new_writes_a_tenant_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "t.json"
    assert cli.main(["new", "legacy-parallel", str(path), "--propagation-delay", "7",
                     "--module", "none"]) == 0
    built = state.load(path)
    assert built["scenario"] == "legacy-parallel"
    assert built["propagation_delay_s"] == 7.0
    assert [m["Name"] for m in built["installed_modules"]] == [
        "ExchangeOnlineManagement"]
    assert cli.main(["new", "clean", str(path)]) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert cli.main(["new", "clean", str(path), "--force"]) == 0
    assert state.load(path)["scenario"] == "clean"


def test_cli_new_unknown_scenario_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["new", "nope", str(tmp_path / "t.json")]) == 2
    assert "argument scenario: unknown scenario 'nope'; the scenarios are " \
        "legacy-inline, " in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_cli_show_summarises_the_tenant(tmp_path, capsys):
    path = tmp_path / "t.json"
    state.save(path, scenarios.build("legacy-inline", now=NOW))
    assert cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tenant     contoso (2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b)" in out
    assert "contoso.ch -> contoso-ch.gate.seppmail.cloud" in out
    assert "module     1.2.5" in out
    assert "  - [SEPPmail.cloud] Inbound-InLine" in out


def test_cli_portal_rename_and_delete(tmp_path, capsys):
    path = tmp_path / "t.json"
    state.save(path, slash_state())
    assert cli.main(["portal", str(path), "--rename", SLASH_IN, "Old inbound"]) == 0
    assert "Old inbound" in names(state.load(path)["inbound_connectors"])
    assert cli.main(["portal", str(path), "--delete", "Old inbound",
                     "--direction", "inbound"]) == 0
    assert "Old inbound" not in names(state.load(path)["inbound_connectors"])
    assert cli.main(["portal", str(path), "--delete", SLASH_OUT]) == 1
    assert "can't be deleted" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(capsys):
    assert cli.main(["portal", "x.json"]) == 2
    assert cli.main([]) == 2


def test_cli_missing_state_file_is_bad_input_exit_2(tmp_path, capsys):
    path = tmp_path / "none.json"
    assert cli.main(["show", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"runbook sandbox show: sandbox state '{path}': No such file or directory; "
        "write a fresh one with `runbook sandbox new SCENARIO FILE`\n")


def test_cli_new_passes_the_module_version_as_written(tmp_path):
    path = tmp_path / "t.json"
    assert cli.main(["new", "clean", str(path), "--module", "1.3.0-preview1"]) == 0
    installed = state.load(path)["installed_modules"]
    assert [m["Version"] for m in installed if m["Name"] == "seppmail365cloud"] == [
        "1.3.0-preview1"]


def test_cli_dns_serves_the_tenant_records(tmp_path):
    """Issue 5.4: the scenario's DNS on 127.0.0.1, so `runbook dns` can be tried
    on a sandbox tenant from a terminal; wrong-mx keeps its MX at Microsoft."""
    import subprocess
    import sys

    from runbook import dns as rdns

    path = tmp_path / "t.json"
    state.save(path, scenarios.build("wrong-mx", now=NOW))
    child = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "sandbox", "dns", str(path),
         "--seconds", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = child.stdout.readline()
        assert first.startswith(f"serving the DNS of {path} on 127.0.0.1:")
        nameserver = first.split(" on ")[1].split()[0]
        check = rdns.check_domain("adventure-works.ch", routing="inline", region="ch",
                                  resolver=rdns.make_resolver(nameserver, timeout=2.0))
    finally:
        child.terminate()
        child.wait(timeout=10)
    assert check.status == "wrong-mx"
    assert check.preferred_mx == "adventure-works-ch.mail.protection.outlook.com"
    assert check.provisioned == "inline" and check.region_found == "ch"


def test_cli_dns_stops_by_itself_and_frees_its_port(tmp_path, capsys):
    """The server runs for --seconds, then stops (a bounded wait, no daemon)."""
    path = tmp_path / "t.json"
    state.save(path, scenarios.build("mixed-domains", now=NOW))
    assert cli.main(["dns", str(path), "--seconds", "0"]) == 0
    out = capsys.readouterr().out
    nameserver = out.split(" on ")[1].split()[0]
    port = int(nameserver.rsplit(":", 1)[1])
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
