"""The whole chain on sandbox tenants (issue 2, "Done when")."""

import json
import os
from pathlib import Path

import pytest

from test_session import wait_gone

from runbook import chain, params
from runbook.powershell.broker import SOCKET_ENV
from runbook.sandbox import state as state_mod
from runbook.sandbox.server import CALL_LOG_ENV

pytestmark = pytest.mark.slow

CASES = {
    "legacy-inline": dict(tenant="contoso", domains=["contoso.ch", "contoso-group.ch"],
                          region="ch", routing="inline"),
    "legacy-parallel": dict(tenant="fabrikam", domains=["fabrikam.com"], region="de",
                            routing="parallel"),
}
TENANT_IDS = {"contoso": "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b",
              "fabrikam": "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60"}


def _run(scenario, state_file, reports, confirm, **extra):
    p = params.validate(**CASES[scenario], sandbox_state=str(state_file),
                        confirm=confirm, wait_minutes=1.0, poll_seconds=0.5, **extra)
    return chain.run(p, reports_dir=reports, progress=lambda *_: None)


def _seppmail(objects):
    return sorted(o["Name"] for o in objects if o["Name"].lower().startswith("[seppmail"))


@pytest.mark.parametrize("scenario", ["legacy-inline", "legacy-parallel"])
def test_confirmed_chain_migrates_to_exactly_the_cbc_objects(scenario, make_tenant,
                                                            reports):
    state_file = make_tenant(scenario, propagation_delay_s=2)
    record = _run(scenario, state_file, reports, confirm=True)
    run = json.loads((record.path / "run.json").read_text())
    assert run["status"] == "succeeded", run["steps"]
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * 5
    assert run["sandbox_state"] == str(state_file)
    for step in chain.STEPS:
        nb = json.loads((record.path / "notebooks" / f"{step}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], step

    tenant = state_mod.load(state_file)
    routing = CASES[scenario]["routing"]
    suffix = "InLine" if routing == "inline" else "Parallel"
    assert _seppmail(tenant["inbound_connectors"]) == [f"[SEPPmail.cloud] Inbound-{suffix}"]
    assert _seppmail(tenant["outbound_connectors"]) == [f"[SEPPmail.cloud] Outbound-{suffix}"]
    inbound = [c for c in tenant["inbound_connectors"]
               if c["Name"].startswith("[SEPPmail.cloud]")][0]
    region = CASES[scenario]["region"]
    tid = TENANT_IDS[CASES[scenario]["tenant"]]
    assert inbound["TlsSenderCertificateName"] == f"{tid}.{region}.seppmail.cloud"
    assert inbound["SenderDomains"] == ["smtp:*;1"]
    rules = _seppmail(tenant["transport_rules"])
    if routing == "parallel":
        assert "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail" in rules
        assert "[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud" not in rules
    else:
        assert rules == ["[SEPPmail.cloud] - 060 Add header X-SM-ruleversion",
                         "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"]
    assert (record.path / "backup" / "index.json").exists()
    assert (record.path / "inventory" / "before.json").exists()
    assert (record.path / "inventory" / "after.json").exists()


def test_unconfirmed_chain_is_a_plan_that_changes_nothing(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    before = state_mod.load(state_file)
    record = _run("legacy-inline", state_file, reports, confirm=False)
    run = record.run()
    assert run["status"] == "planned"
    after = state_mod.load(state_file)
    for key in ("inbound_connectors", "outbound_connectors", "transport_rules",
                "accepted_domains", "installed_modules", "arc_config",
                "hosted_connection_filter_policy", "hosted_content_filter_policy"):
        assert after.get(key) == before.get(key), key
    verdicts = [e["data"] for e in record.events() if e["kind"] == "verdict"]
    assert [v["status"] for v in verdicts] == ["succeeded", "planned", "planned",
                                               "planned", "planned"]
    assert all(v["message"] for v in verdicts)


def test_chain_stops_at_the_first_failing_step(make_tenant, reports):
    state_file = make_tenant("legacy-inline")
    p = params.validate(tenant="contoso", domains=["nosuch.example"], region="ch",
                        routing="inline", sandbox_state=str(state_file), confirm=True)
    record = chain.run(p, reports_dir=reports, progress=lambda *_: None)
    run = record.run()
    assert run["status"] == "failed"
    assert [s["name"] for s in run["steps"]] == ["01-prerequisites"]
    assert run["steps"][0]["status"] == "failed"
    assert run["steps"][0]["error"]["ename"] == "StepFailed"
    assert "nosuch.example" in run["steps"][0]["error"]["evalue"]
    assert (record.path / "notebooks" / "01-prerequisites.ipynb").exists()


# -- one session per run, kernels over IPC (issue 8) ----------------------------


def _calls(path) -> list[tuple[int, str]]:
    return [(c["pid"], c["command"]) for c in map(json.loads,
                                                  path.read_text().splitlines())]


def test_a_whole_chain_connects_once_and_every_step_calls_that_one_child(
        make_tenant, reports, tmp_path, monkeypatch):
    # Every sandbox child of the run, the chain's and any a kernel might
    # start, writes each request it receives to this log.
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALL_LOG_ENV, str(log))
    state_file = make_tenant("legacy-inline", propagation_delay_s=0)
    record = _run("legacy-inline", state_file, reports, confirm=True)
    assert record.run()["status"] == "succeeded"
    calls = _calls(log)
    commands = [command for _, command in calls]
    assert commands.count("Connect-ExchangeOnline") == 1
    assert commands[0] == "Connect-ExchangeOnline"
    assert len({pid for pid, _ in calls}) == 1
    # Step 2 installed the module and step 4 imported it in that same child.
    assert commands.index("Install-Module") < commands.index("Import-Module")
    versions = [e["data"] for e in record.events() if e["kind"] == "versions"]
    assert [v["step"] for v in versions] == list(chain.STEPS)
    assert versions[0]["seppmail365cloud"] == ["1.2.5"]
    assert versions[-1]["seppmail365cloud"][0] == "2.0.2"
    assert SOCKET_ENV not in os.environ


def test_chain_kernels_run_over_ipc_without_the_plain_text_warning(
        make_tenant, reports, capfd):
    state_file = make_tenant("legacy-inline")
    p = params.validate(**CASES["legacy-inline"], sandbox_state=str(state_file))
    record = chain.run(p, reports_dir=reports, steps=("01-prerequisites",),
                       progress=lambda *_: None)
    assert record.run()["status"] == "planned"
    # ipykernel warns on its stderr for TCP: that is the step's kernel log in the
    # run folder (when it said anything), and nothing reaches this console.
    log = record.path / "notebooks" / "01-prerequisites.kernel.log"
    said = capfd.readouterr().err + (log.read_text() if log.exists() else "")
    assert "without encryption" not in said
    assert "Kernel is running over TCP" not in said


def test_a_run_whose_shared_session_cannot_start_says_so_and_sets_no_socket(
        reports, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{}\n")
    p = params.validate(**CASES["legacy-inline"], sandbox_state=str(broken))
    record = chain.RunRecord.create(reports, "contoso", parameters=p.as_dict(),
                                    backend="sandbox", sandbox_state=str(broken))
    said = []
    with chain.shared_session(record, p, said.append) as broker:
        assert broker is None
        assert SOCKET_ENV not in os.environ
    assert len(said) == 1
    assert said[0].startswith("no shared PowerShell session (ProtocolError: ")
    assert said[0].endswith("each step connects on its own")


def test_the_socket_reaches_the_kernels_environment_and_the_chains_own_is_untouched(
        make_tenant, reports, monkeypatch):
    # The chain never edits os.environ (a batch may run chains side by side in
    # one process): each kernel gets its environment from step_environment.
    monkeypatch.setenv(SOCKET_ENV, "/earlier/value")
    state_file = make_tenant("legacy-inline")
    p = params.validate(**CASES["legacy-inline"], sandbox_state=str(state_file))
    record = chain.RunRecord.create(reports, "contoso", parameters=p.as_dict(),
                                    backend="sandbox", sandbox_state=str(state_file))
    with chain.shared_session(record, p) as broker:
        assert os.environ[SOCKET_ENV] == "/earlier/value"
        assert oct(os.stat(broker.path.parent).st_mode & 0o777) == "0o700"
        env = chain.step_environment(record, "03-cleanup", str(broker.path))
        assert env[SOCKET_ENV] == str(broker.path)
        assert env[chain.REPORTS_ENV] == str(reports)
        assert env[chain.KERNEL_LOG_ENV] == str(
            record.path / "notebooks" / "03-cleanup.kernel.log")
        child = broker.session.pid
    assert os.environ[SOCKET_ENV] == "/earlier/value"
    assert not broker.path.parent.exists()
    assert wait_gone(child)
    # Without a shared session a kernel is told no socket, whatever this
    # process's environment holds.
    assert SOCKET_ENV not in chain.step_environment(record, "03-cleanup")


# -- issue 2 "Done when", through the `runbook` command itself ---------------------

# seppmail365cloud.md §3.1 for module 2.0.2 (what `runbook demo` and a run without
# --module-version install), worked out by hand for each reference tenant.
CBC_INBOUND = {
    "inline": {"Name": "[SEPPmail.cloud] Inbound-InLine", "ConnectorType": "Partner",
               "ConnectorSource": "Default", "CloudServicesMailEnabled": False,
               "RequireTls": True, "RestrictDomainsToCertificate": True,
               "SenderDomains": ["smtp:*;1"], "EFSkipLastIP": True, "Enabled": True,
               "TlsSenderCertificateName":
                   "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b.ch.seppmail.cloud"},
    # SenderDomains `*` as Exchange stores it (exchange-objects.md §2).
    "parallel": {"Name": "[SEPPmail.cloud] Inbound-Parallel",
                 "ConnectorType": "OnPremises", "ConnectorSource": "Default",
                 "CloudServicesMailEnabled": False, "RequireTls": True,
                 "RestrictDomainsToCertificate": True,
                 "RestrictDomainsToIPAddresses": False, "SenderDomains": ["smtp:*;1"],
                 "EFSkipLastIP": True, "Enabled": True,
                 "TlsSenderCertificateName":
                     "7d9e1f3a-5b6c-4d8e-8f0a-1b2c3d4e5f60.de.seppmail.cloud"},
}
CBC_OUTBOUND = {
    "inline": {"Name": "[SEPPmail.cloud] Outbound-InLine", "ConnectorType": "Partner",
               "ConnectorSource": "Default", "CloudServicesMailEnabled": False,
               "SmartHosts": ["contoso-ch.relay.seppmail.cloud"],
               "TlsSettings": "DomainValidation", "TlsDomain": "*.ch.seppmail.cloud",
               "UseMXRecord": False, "IsTransportRuleScoped": True,
               "RecipientDomains": [], "Enabled": True},
    "parallel": {"Name": "[SEPPmail.cloud] Outbound-Parallel",
                 "ConnectorType": "OnPremises", "ConnectorSource": "Default",
                 "CloudServicesMailEnabled": False,
                 "SmartHosts": ["fabrikam-com.mail.seppmail.cloud"],
                 "TlsSettings": "DomainValidation", "TlsDomain": "*.de.seppmail.cloud",
                 "UseMXRecord": False, "IsTransportRuleScoped": True,
                 "RecipientDomains": [], "Enabled": True},
}
# seppmail365cloud.md §2.2, column 2.0.2, in priority order.
CBC_RULES = {
    "inline": ["060 Add header X-SM-ruleversion",
               "200 Route outgoing e-mails to SEPPmail"],
    "parallel": ["060 Add header X-SM-ruleversion",
                 "100 Route incoming e-mails to SEPPmail",
                 "110 Route incoming BGP e-mails to SEPPmail",
                 "120 Route incoming tagged e-mails to SEPPmail",
                 "200 Route outgoing e-mails to SEPPmail",
                 "300 Clean outbound SEPPmail header decrypted",
                 "400 Clean outbound SEPPmail header encrypted",
                 "500 Clean outbound SEPPmail header outgoing",
                 "600 Clean outbound SEPPmail header smarthost",
                 "700 Clean outbound header X-sepp-smarthost"],
}


def _assert_migrated(run_dir, state_file, routing):
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "succeeded", run["steps"]
    assert [s["name"] for s in run["steps"]] == list(chain.STEPS)
    for step in chain.STEPS:
        nb = json.loads((run_dir / "notebooks" / f"{step}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"]]
        assert all(c["execution_count"] for c in code), step
        assert not [o for c in code for o in c.get("outputs", [])
                    if o.get("output_type") == "error"], step

    tenant = state_mod.load(state_file)
    inbound = [c for c in tenant["inbound_connectors"]
               if c["Name"].lower().startswith("[seppmail")]
    outbound = [c for c in tenant["outbound_connectors"]
                if c["Name"].lower().startswith("[seppmail")]
    # Exactly the two CBC connectors: no pre-CBC one (the same names with a
    # `*.<region>.seppmail.cloud` certificate, §3.3) is left.
    assert [{k: c.get(k) for k in CBC_INBOUND[routing]} for c in inbound] == [
        CBC_INBOUND[routing]]
    assert [{k: c.get(k) for k in CBC_OUTBOUND[routing]} for c in outbound] == [
        CBC_OUTBOUND[routing]]
    rules = sorted((r for r in tenant["transport_rules"]
                    if r["Name"].lower().startswith("[seppmail")),
                   key=lambda r: r["Priority"])
    assert [r["Name"] for r in rules] == [
        f"[SEPPmail.cloud] - {name}" for name in CBC_RULES[routing]]


def test_runbook_demo_migrates_legacy_inline_and_prints_the_run_folder_last(
        reports, capsys):
    from runbook import cli

    assert cli.main(["demo", "--reports", str(reports)]) == 0
    lines = capsys.readouterr().out.splitlines()
    run_dir = reports / "contoso" / lines[-1].rsplit("/", 1)[-1]
    assert lines[-1] == str(run_dir) and run_dir.is_dir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["tenant"] == "contoso" and run["backend"] == "sandbox"
    _assert_migrated(run_dir, run["sandbox_state"], "inline")


def test_runbook_run_parallel_confirmed_creates_the_cbc_connectors_and_rules(
        make_tenant, reports, capsys):
    from runbook import cli

    state_file = make_tenant("legacy-parallel", propagation_delay_s=1)
    code = cli.main(["run", "--tenant", "fabrikam", "--domain", "fabrikam.com",
                     "--region", "de", "--routing", "parallel", "--sandbox-state",
                     str(state_file), "--reports", str(reports), "--wait-minutes", "1",
                     "--poll-seconds", "0.5", "--confirm"])
    run_dir = capsys.readouterr().out.splitlines()[-1]
    assert code == 0
    _assert_migrated(Path(run_dir), state_file, "parallel")


def test_runbook_run_parallel_without_confirm_is_a_plan_that_changes_no_byte(
        make_tenant, reports, capsys):
    from runbook import cli

    state_file = make_tenant("legacy-parallel")
    before = state_file.read_bytes()
    code = cli.main(["run", "--tenant", "fabrikam", "--domain", "fabrikam.com",
                     "--region", "de", "--routing", "parallel", "--sandbox-state",
                     str(state_file), "--reports", str(reports)])
    run_dir = Path(capsys.readouterr().out.splitlines()[-1])
    assert code == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "planned"
    assert [s["status"] for s in run["steps"]] == ["succeeded"] + ["planned"] * 4
    assert state_file.read_bytes() == before
    verdicts = {e["data"]["step"]: e["data"]["message"]
                for e in map(json.loads, (run_dir / "events.jsonl").read_text()
                             .splitlines()) if e["kind"] == "verdict"}
    assert verdicts["02-install-module"] == (
        "Would install seppmail365cloud 2.0.2 (installed now: 1.2.5).")
    assert verdicts["03-cleanup"].startswith(
        "Would remove 7 transport rules, 1 outbound connector, 1 inbound connector, "
        "rules first, after a backup.")
