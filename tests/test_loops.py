"""Mail-loop diagnosis (runbook.loops) on real sandbox children.

Each tenant is a sandbox child behind `runbook.powershell.Session`, connected as
`<tenant>.onmicrosoft.com`; DNS questions go to the child's own DNS server and
tenant IDs to a loopback OpenID discovery server serving the same state. The
`mail-loop` scenario's partner adatum.ch is on SEPPmail.cloud without CBC
(scenarios.LOOP_PARTNER); the migrated tenant is that scenario without the
partner tenant, so nothing loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from runbook import dns, loops, openid, params
from runbook.audit import RunRecord
from runbook.exchange import ExchangeOnline
from runbook.params import ParameterError
from runbook.powershell import Session, sandbox_command
from runbook.sandbox import exo as sandbox_exo
from runbook.sandbox import openid_server, scenarios, state as state_file
from runbook.sandbox.dnsserver import start_dns_server

ADATUM_ID = "4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83"
# sha1("4e8a2c6f-9d1b-4f3e-a5c7-2b9d0e1f6a83") + ".cbc.seppmail.cloud" (§3.2)
ADATUM_CBC_RECORD = "23bc66846902eed6ac46a98768ae2f698406660d.cbc.seppmail.cloud"
NORTHWIND_ID = "0e2a4c6e-8f1b-4d3f-a5b7-9c1e3a5c7e9f"
HOPS = 6  # runbook.sandbox.trace.MAX_HOPS: passes before the hop limit fails it
APPLIANCE = "[SEPPmail] Appliance -> ExchangeOnline"
SLASHED = "[SEPPmail.cloud] SEPPmail -> ExO / MX:M365"
PARAMS = params.validate(tenant="northwind", domains=["northwindtraders.ch"],
                         region="ch", routing="inline")


@dataclass
class Tenant:
    exo: ExchangeOnline
    resolver: object
    discovery: openid.Discovery
    tenant_id: str

    def diagnose(self, hours: float = 0.1, **options) -> loops.Diagnosis:
        start, end = loops.window(hours)
        local = loops.check_local(self.exo, PARAMS, tenant_id=self.tenant_id,
                                  resolver=self.resolver)
        found = loops.find_loops(self.exo, start, end, **options)
        verdicts = loops.check_recipients(found, resolver=self.resolver,
                                          discovery=self.discovery)
        return loops.Diagnosis(local, found, verdicts)


def _serve(state: dict, folder: Path):
    path = folder / "tenant.json"
    state_file.save(path, state)
    session = Session(sandbox_command(path), timeout=30)
    server = openid_server.start_openid_server(state)
    exchange = ExchangeOnline(session)
    connection = exchange.connect(f"{state['tenant']['name']}.onmicrosoft.com")
    tenant = Tenant(exchange, dns.make_resolver(session.hello["dns"], timeout=2.0),
                    openid.Discovery(server.url, timeout=2.0),
                    str(connection["TenantID"]))
    return tenant, session, server


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    running = []

    def start(state: dict) -> Tenant:
        tenant, session, server = _serve(state, tmp_path_factory.mktemp("tenant"))
        running.append((session, server))
        return tenant

    yield start
    for session, server in running:
        session.close()
        server.stop()


def migrated() -> dict:
    """The mail-loop tenant without a partner on SEPPmail.cloud: nothing loops."""
    built = scenarios.build("mail-loop")
    built["other_tenants"] = []
    return built


def with_old_connectors(built: dict) -> dict:
    when = scenarios.TENANT_CREATED
    built["inbound_connectors"].append(sandbox_exo.inbound_connector(
        built, SLASHED, when, Enabled=False, ConnectorType="OnPremises",
        SenderDomains=["smtp:*;1"], TlsSenderCertificateName="*.ch.seppmail.cloud"))
    built["inbound_connectors"].append(sandbox_exo.inbound_connector(
        built, APPLIANCE, when, ConnectorType="Partner", SenderDomains=["smtp:*;1"],
        SenderIPAddresses=["193.135.252.17"], TlsSenderCertificateName="seppmail.x.ch"))
    return built


@pytest.fixture(scope="module")
def looping(serve) -> Tenant:
    return serve(scenarios.build("mail-loop"))


@pytest.fixture(scope="module")
def loop_diagnosis(looping) -> loops.Diagnosis:
    return looping.diagnose()


# -- the mail-loop scenario ------------------------------------------------------------


def test_loop_is_found_for_the_partner_domain_only(loop_diagnosis):
    found = loop_diagnosis.loops
    assert found.domains == ["adatum.ch"]
    group = found.groups[0]
    assert group.recipients == ["info@adatum.ch"]
    assert group.passes == HOPS
    assert found.messages > len(group.messages) > 10   # the inbound mail does not loop


def test_looping_message_passes_the_seppmail_connectors_to_the_hop_limit(loop_diagnosis):
    group = loop_diagnosis.loops.groups[0]
    assert group.through_seppmail is True
    assert group.connectors == ["[SEPPmail.cloud] Inbound-InLine",
                                "[SEPPmail.cloud] Outbound-InLine"]
    assert group.hop_limit_seen is True
    inspected = [m for m in group.messages if m.inspected]
    assert len(inspected) == loops.DETAILS_PER_DOMAIN
    assert all(m.seppmail_sends == HOPS for m in inspected if m.hop_limit)


def test_partner_domain_is_on_seppmail_cloud_without_cbc(loop_diagnosis):
    [verdict] = loop_diagnosis.recipients
    assert verdict.verdict == loops.WITHOUT_CBC
    assert verdict.acts == "the recipient's side"
    assert (verdict.on_seppmail, verdict.provisioned, verdict.region) == (True, "inline",
                                                                         "ch")
    assert verdict.mx == "adatum-ch.gate.seppmail.cloud"
    assert (verdict.tenant_id, verdict.cbc_ready) == (ADATUM_ID, False)
    assert verdict.cbc_record == ADATUM_CBC_RECORD
    assert verdict.problems == []


def test_loop_verdict_names_the_domain_and_says_the_recipient_must_move_to_cbc(
        loop_diagnosis):
    status, message = loop_diagnosis.verdict()
    assert status == "failed"
    assert message.startswith("Mail to adatum.ch loops (from ")
    assert ("adatum.ch is served by SEPPmail.cloud (MX adatum-ch.gate.seppmail.cloud, "
            "set up for inline, region ch) and its tenant "
            f"{ADATUM_ID} is not ready for CBC (no TXT record at "
            f"{ADATUM_CBC_RECORD}).") in message
    assert "The recipient's side must act" in message
    assert message.endswith("Nothing needs to change in this tenant.")


def test_migrated_tenant_with_a_loop_has_no_local_findings(loop_diagnosis):
    assert loop_diagnosis.local == []
    assert loop_diagnosis.cause == "adatum.ch: on SEPPmail.cloud without CBC"


def test_message_id_narrows_the_trace_to_that_message(looping, loop_diagnosis):
    wanted = loop_diagnosis.loops.groups[0].sample.message_id
    found = looping.diagnose(message_id=wanted.strip("<>")).loops
    assert [m.message_id for g in found.groups for m in g.messages] == [wanted]
    assert found.messages == 1


def test_recipient_filter_without_the_looping_address_finds_no_loop(looping):
    found = looping.diagnose(recipients=["Anna.Meier@northwindtraders.ch"]).loops
    assert found.groups == []
    assert found.rows > 0


def test_diagnosis_event_is_recorded_and_shown_in_the_report(loop_diagnosis, tmp_path):
    record = RunRecord.create(tmp_path, "northwind", parameters={"tenant": "northwind"})
    stored = loop_diagnosis.record(record, step="06-diagnose-mail-loops")
    data = stored["data"]
    assert (data["step"], data["loop"], data["status"]) == (
        "06-diagnose-mail-loops", True, "failed")
    assert data["cause"] == "adatum.ch: on SEPPmail.cloud without CBC"
    [domain] = data["domains"]
    assert {k: domain[k] for k in ("domain", "verdict", "tenant_id", "cbc_ready",
                                   "passes")} == {
        "domain": "adatum.ch", "verdict": "recipient-without-cbc",
        "tenant_id": ADATUM_ID, "cbc_ready": False, "passes": HOPS}
    record.finish("failed")
    page = BeautifulSoup((record.path / "report.html").read_text(), "html.parser")
    table = page.find("section", id="diagnosis").table
    facts = {tr.th.get_text(): tr.td.get_text() for tr in table.find_all("tr")}
    assert facts["cause"] == "adatum.ch: on SEPPmail.cloud without CBC"
    assert facts["loop"] == "true"


# -- a migrated tenant without loops ---------------------------------------------------


def test_migrated_tenant_without_partner_on_seppmail_has_no_loop(serve):
    diagnosis = serve(migrated()).diagnose()
    assert diagnosis.loops.groups == []
    assert diagnosis.local == []
    status, message = diagnosis.verdict()
    assert status == "succeeded"
    assert message.startswith(f"No mail loop: {diagnosis.loops.messages} messages in "
                              "the trace from ")
    assert message.endswith("none seen 3 times or more; this tenant's configuration "
                            "is in order.")
    assert diagnosis.cause == "no loop"


# -- this tenant comes first -----------------------------------------------------------


def test_old_connector_left_is_named_first(serve):
    diagnosis = serve(with_old_connectors(migrated())).diagnose()
    assert [(f.kind, f.name, f.enabled) for f in diagnosis.local] == [
        ("connector", APPLIANCE, True), ("connector", SLASHED, False)]
    status, message = diagnosis.verdict()
    assert status == "failed"
    assert message.startswith(
        "This tenant's own configuration comes first: the old SEPPmail inbound "
        f"connector '{APPLIANCE}' is still here and enabled (appliance-era SEPPmail365 "
        "object ([SEPPmail])): remove it with step 3 (03-cleanup). 1 more finding in "
        "the table. No mail loop in the trace from ")
    assert diagnosis.cause == f"this tenant: connector {APPLIANCE}"


def test_slash_named_leftover_is_to_be_removed_in_the_admin_center(serve):
    built = migrated()
    built["inbound_connectors"].append(sandbox_exo.inbound_connector(
        built, SLASHED, scenarios.TENANT_CREATED, Enabled=False,
        SenderDomains=["smtp:*;1"], TlsSenderCertificateName="*.ch.seppmail.cloud"))
    [finding] = serve(built).diagnose().local
    assert finding.message == (
        f"the old SEPPmail inbound connector '{SLASHED}' is still here and disabled "
        "(0.9.x name (before module 1.0.0)): remove it in the Exchange admin center "
        "(its name holds '/' or '\\', which PowerShell can no longer remove)")


def test_loop_with_an_old_connector_left_blames_this_tenant_first(serve):
    diagnosis = serve(with_old_connectors(scenarios.build("mail-loop"))).diagnose()
    assert diagnosis.loops.domains == ["adatum.ch"]
    assert diagnosis.local[0].name == APPLIANCE
    status, message = diagnosis.verdict()
    assert status == "failed"
    assert message.startswith("This tenant's own configuration comes first: the old "
                              f"SEPPmail inbound connector '{APPLIANCE}'")
    assert "Mail to adatum.ch loops (from " in message
    assert message.endswith("fix this tenant first, then run the diagnosis again.")


def test_wrong_mx_of_an_own_domain_is_a_local_finding(serve):
    built = migrated()
    for record in built["dns"]["records"]:
        if record["name"] == "northwindtraders.ch." and record["type"] == "MX":
            record["value"] = "10 northwindtraders-ch.mail.protection.outlook.com."
    [finding] = serve(built).diagnose().local
    assert (finding.kind, finding.name) == ("mx", "northwindtraders.ch")
    assert finding.message == (
        "northwindtraders.ch: the preferred MX of northwindtraders.ch is "
        "northwindtraders-ch.mail.protection.outlook.com; for inline routing it must "
        "be northwindtraders-ch.gate.seppmail.cloud alone: change the MX record at "
        "the domain's DNS provider")


def test_pre_cbc_tenant_names_its_old_connectors_and_the_missing_cbc_ones(serve):
    contoso = params.validate(tenant="contoso", domains=["contoso.ch",
                                                         "contoso-group.ch"],
                              region="ch", routing="inline")
    tenant = serve(scenarios.build("legacy-inline"))
    found = loops.check_local(tenant.exo, contoso, tenant_id=tenant.tenant_id,
                              resolver=tenant.resolver)
    assert [(f.kind, f.name, f.enabled) for f in found] == [
        ("connector", "[SEPPmail.cloud] Inbound-InLine", True),
        ("connector", "[SEPPmail.cloud] Outbound-InLine", True),
        ("connector", "[SEPPmail.cloud] Inbound-InLine", None),
        ("connector", "[SEPPmail.cloud] Outbound-InLine", None)]
    assert found[0].message.endswith("(wildcard sender certificate *.ch.seppmail.cloud"
                                     " (pre-CBC)): remove it with step 3 (03-cleanup)")
    assert found[2].message == ("the CBC inbound connector '[SEPPmail.cloud] "
                                "Inbound-InLine' does not exist: the migration is not "
                                "finished; run step 4 (04-configure)")


def test_cbc_inbound_connector_with_another_tenants_certificate_is_named(serve):
    built = migrated()
    built["inbound_connectors"][-1]["TlsSenderCertificateName"] = \
        f"{ADATUM_ID}.ch.seppmail.cloud"
    [finding] = serve(built).diagnose().local
    assert finding.message == (
        "the CBC inbound connector '[SEPPmail.cloud] Inbound-InLine' expects the "
        f"certificate '{ADATUM_ID}.ch.seppmail.cloud', not this tenant's "
        f"'{NORTHWIND_ID}.ch.seppmail.cloud' (§3.1): recreate it with step 4")


# -- recipient verdicts, one case each (in-process DNS and discovery) ------------------


@pytest.fixture
def world():
    """A DNS server and a discovery server for a handful of recipient domains."""
    ready_id = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    records = [
        {"name": "ready.ch.", "type": "MX", "value": "10 ready-ch.gate.seppmail.cloud."},
        {"name": "ready-ch.gate.seppmail.cloud.", "type": "A", "value": "86.119.35.35"},
        {"name": "ready-ch.relay.seppmail.cloud.", "type": "A", "value": "86.119.38.33"},
        {"name": scenarios.cbc_record_name(ready_id), "type": "TXT",
         "value": f'"seppmail-cbc={ready_id}"'},
        {"name": "notenant.ch.", "type": "MX", "value": "10 notenant-ch.mail.protection"
                                                        ".outlook.com."},
        {"name": "notenant-ch.mail.seppmail.cloud.", "type": "A",
         "value": "162.55.155.177"},
        {"name": "elsewhere.ch.", "type": "MX", "value": "10 mx.elsewhere.ch."},
        {"name": "slow.ch.", "type": "MX", "value": "10 mx.slow.ch."},
        {"name": "slow-ch.gate.seppmail.cloud.", "type": "TIMEOUT"},
    ]
    state = {"tenant": {}, "other_tenants": [
        {"tenant_id": ready_id, "domain": "ready.ch"},
        {"tenant_id": "6b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e", "domain": "elsewhere.ch"}]}
    with start_dns_server(records) as server, \
            openid_server.start_openid_server(state) as service:
        yield (dns.make_resolver(server.nameserver, timeout=0.6),
               openid.Discovery(service.url, timeout=1.0), ready_id)


def test_recipient_on_seppmail_and_cbc_ready_is_not_the_special_case(world):
    resolver, discovery, ready_id = world
    found = loops.check_recipient("ready.ch", resolver=resolver, discovery=discovery,
                                  sample="<m1@x>")
    assert (found.verdict, found.tenant_id, found.cbc_ready) == (loops.CBC_READY,
                                                                 ready_id, True)
    assert found.acts == "the recipient's side and SEPPmail support"
    assert found.message.endswith("so this is not the known special case: ask the "
                                  "recipient whether its connectors were moved to CBC "
                                  "yet, and give SEPPmail support message <m1@x>")


def test_recipient_on_seppmail_without_a_microsoft_tenant_goes_to_seppmail_support(
        world):
    resolver, discovery, _ = world
    found = loops.check_recipient("notenant.ch", resolver=resolver, discovery=discovery)
    assert (found.verdict, found.provisioned, found.region) == (loops.NO_TENANT,
                                                                "parallel", "de")
    assert found.acts == "SEPPmail support"
    assert found.problems == ["no Microsoft 365 tenant holds notenant.ch (HTTP 400, "
                              "AADSTS90002): AADSTS90002: Tenant 'notenant.ch' not "
                              "found. Check to make sure you have the correct tenant "
                              "ID and are signing into the correct cloud."]


def test_recipient_not_on_seppmail_puts_the_loop_back_here(world):
    resolver, discovery, _ = world
    found = loops.check_recipient("elsewhere.ch", resolver=resolver, discovery=discovery,
                                  sample="<m2@x>", through_seppmail=True)
    assert (found.verdict, found.on_seppmail, found.mx) == (loops.NOT_SEPPMAIL, False,
                                                            "mx.elsewhere.ch")
    assert found.acts == "this tenant"
    assert "the loop through the SEPPmail connectors starts here" in found.message


def test_recipient_whose_seppmail_hosts_time_out_is_unknown(world):
    resolver, discovery, _ = world
    found = loops.check_recipient("slow.ch", resolver=resolver, discovery=discovery)
    assert (found.verdict, found.on_seppmail, found.mx) == (loops.UNKNOWN, None,
                                                            "mx.slow.ch")
    assert found.message.startswith("slow.ch: DNS did not answer for its SEPPmail.cloud"
                                    " hosts (no DNS answer in time for "
                                    "slow-ch.gate.seppmail.cloud A")
    assert found.problems == ["timeout", "no Microsoft 365 tenant holds slow.ch (HTTP "
                              "400, AADSTS90002): AADSTS90002: Tenant 'slow.ch' not "
                              "found. Check to make sure you have the correct tenant ID "
                              "and are signing into the correct cloud."]


def test_unreachable_discovery_leaves_cbc_readiness_unknown(world):
    resolver, _, _ = world
    discovery = openid.Discovery("http://127.0.0.1:9", timeout=0.5)
    found = loops.check_recipient("ready.ch", resolver=resolver, discovery=discovery)
    assert (found.verdict, found.tenant_id, found.cbc_ready) == (loops.UNKNOWN, None,
                                                                 None)
    assert found.acts == "nobody yet: repeat the look-ups"
    assert "cannot be reached" in found.message
    assert found.message.endswith("run the diagnosis again")


# -- where the discovery service is ----------------------------------------------------


class _Session:
    def __init__(self, host: str, hello: dict):
        self.host, self.hello = host, hello


def test_discovery_is_the_sandbox_childs_announced_server():
    found = loops.discovery_for(_Session("sandbox", {"openid": "http://127.0.0.1:4711"}))
    assert found.base_url == "http://127.0.0.1:4711"


def test_sandbox_child_without_a_discovery_server_gets_none():
    assert loops.discovery_for(_Session("sandbox", {})) is None


def test_real_tenant_asks_the_modules_discovery_service():
    found = loops.discovery_for(_Session("pwsh", {}))
    assert found.base_url == "https://login.windows.net"


def test_no_discovery_service_makes_the_tenant_unknown(world):
    resolver, _, _ = world
    found = loops.check_recipient("ready.ch", resolver=resolver, discovery=None)
    assert found.verdict == loops.UNKNOWN
    assert found.problems[-1].startswith("tenant ID not looked up")


# -- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("hours", [0, 241, -1, True, "24", None])
def test_window_hours_outside_the_traces_limits_is_refused(hours):
    with pytest.raises(ParameterError) as caught:
        loops.window(hours)
    assert caught.value.name == "window_hours"
    assert caught.value.allowed == ("a number of hours from 0.01 to 240 (the trace "
                                    "answers 10 days a query)")


def test_window_is_the_last_hours_with_a_minute_of_slack():
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    assert loops.window(24, now=now) == (
        datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc),
        datetime(2026, 12, 4, 10, 1, tzinfo=timezone.utc))


def test_window_since_a_moment_starts_a_minute_before_it():
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    since = datetime(2026, 12, 4, 9, 48, tzinfo=timezone.utc)
    assert loops.window(since=since, now=now) == (
        datetime(2026, 12, 4, 9, 47, tzinfo=timezone.utc),
        datetime(2026, 12, 4, 10, 1, tzinfo=timezone.utc))


def test_window_since_long_ago_is_cut_to_ten_days():
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    since = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert loops.window(since=since, now=now)[0] == datetime(2026, 11, 24, 10, 1,
                                                             tzinfo=timezone.utc)


def test_recipients_are_lower_cased_and_deduplicated():
    assert loops.checked_recipients(["Info@ADATUM.ch", "info@adatum.ch",
                                     "x@Müller.ch"]) == ("info@adatum.ch",
                                                         "x@xn--mller-kva.ch")


@pytest.mark.parametrize("value,allowed", [
    ("info@adatum.ch", 'a list of addresses, e.g. ["info@adatum.ch"], or []'),
    (["info adatum.ch"], "an e-mail address such as info@adatum.ch"),
    (["a@b@c.ch"], "an e-mail address such as info@adatum.ch"),
    (["info@localhost"], "an e-mail address such as info@adatum.ch"),
    ([f"u{n}@a.ch" for n in range(21)], "at most 20 addresses (one trace query each)"),
])
def test_recipients_that_are_not_a_list_of_addresses_are_refused(value, allowed):
    with pytest.raises(ParameterError) as caught:
        loops.checked_recipients(value)
    assert (caught.value.name, caught.value.allowed) == ("recipients", allowed)


def test_message_id_gets_its_angle_brackets():
    assert loops.checked_message_id(" SB1.0.OU@x.ch ") == "<SB1.0.OU@x.ch>"
    assert loops.checked_message_id("<SB1@x>") == "<SB1@x>"
    assert loops.checked_message_id("") == ""


@pytest.mark.parametrize("value", ["<a b@x>", 7, None])
def test_message_id_that_is_not_one_id_is_refused(value):
    with pytest.raises(ParameterError) as caught:
        loops.checked_message_id(value)
    assert caught.value.name == "message_id"


# -- a notebook's context --------------------------------------------------------------


def test_run_on_a_step_context_records_the_diagnosis_and_fails_the_step(reports):
    from runbook.notebook import StepFailed, open_step

    ctx = open_step("06-diagnose-mail-loops", {
        "tenant": "northwind", "domains": ["northwindtraders.ch"], "region": "ch",
        "routing": "inline", "scenario": "mail-loop"})
    with openid_server.start_openid_server(state_file.load(ctx.sandbox_state)) as server:
        diagnosis = loops.run(ctx, window_hours=0.1,
                              discovery=openid.Discovery(server.url, timeout=2.0))
        with pytest.raises(StepFailed, match="^Mail to adatum.ch loops"):
            ctx.conclude(*diagnosis.verdict())
    events = ctx.record.events()
    [event] = [e for e in events if e["kind"] == "diagnosis"]
    assert event["data"]["step"] == "06-diagnose-mail-loops"
    assert event["data"]["domains"][0]["verdict"] == loops.WITHOUT_CBC
    [verdict] = [e for e in events if e["kind"] == "verdict"]
    assert verdict["data"]["status"] == "failed"


def test_request_checks_the_diagnosis_parameters_before_anything_runs():
    asked = loops.request(2, ["Info@ADATUM.ch"], "SB1.0.OU@x.ch")
    assert asked == loops.Request(2.0, ("info@adatum.ch",), "<SB1.0.OU@x.ch>", None)
    now = datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    assert asked.window(now) == (datetime(2026, 12, 4, 8, 0, tzinfo=timezone.utc),
                                 datetime(2026, 12, 4, 10, 1, tzinfo=timezone.utc))
    with pytest.raises(ParameterError) as caught:
        loops.request(0)
    assert caught.value.name == "window_hours"


def test_trace_summary_counts_the_looping_messages_per_domain(loop_diagnosis):
    found = loop_diagnosis.loops
    looping = len(found.groups[0].messages)
    summary = found.summary()
    assert summary.startswith(f"{looping} of {found.messages} messages in the trace "
                              "from ")
    assert summary.endswith(f" loop, to adatum.ch (up to {HOPS} passes)")


# -- step 5 ----------------------------------------------------------------------------


def test_step_5_keeps_its_own_verdict_without_a_diagnosis(serve):
    flow = ("failed", "After 10.0 minutes the trace shows no inbound message")
    assert loops.step_verdict(flow, None) == flow
    quiet = serve(migrated()).diagnose()
    assert loops.step_verdict(flow, quiet) == flow


def test_step_5_takes_the_diagnosis_verdict_once_it_found_the_loop(loop_diagnosis):
    flow = ("failed", "Mail loops: messages to adatum.ch pass the SEPPmail connectors")
    assert loops.step_verdict(flow, loop_diagnosis) == loop_diagnosis.verdict()


def test_step_5_diagnoses_only_when_its_wait_saw_a_loop(reports):
    from runbook.mailflow import FlowStatus
    from runbook.notebook import open_step

    ctx = open_step("05-verify-mailflow", {
        "tenant": "northwind", "domains": ["northwindtraders.ch"], "region": "ch",
        "routing": "inline", "scenario": "mail-loop"})
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    try:
        assert loops.when_looping(ctx, FlowStatus(), since) is None
        diagnosis = loops.when_looping(ctx, FlowStatus(looping={"adatum.ch": HOPS}),
                                       since)
    finally:
        ctx.close()
    assert diagnosis.loops.domains == ["adatum.ch"]
    assert diagnosis.loops.start == since - loops.SINCE_MARGIN
    [event] = [e["data"] for e in ctx.record.events() if e["kind"] == "diagnosis"]
    assert event["step"] == "05-verify-mailflow"
    assert event["cause"] == "adatum.ch: on SEPPmail.cloud without CBC"


def test_verdict_cell_run_again_shows_the_verdict_and_records_nothing_more(reports):
    from runbook import widgets
    from runbook.notebook import StepFailed, open_step

    ctx = widgets.interactive(open_step("06-diagnose-mail-loops", {
        "tenant": "northwind", "domains": ["northwindtraders.ch"], "region": "ch",
        "routing": "inline", "scenario": "mail-loop"}), live=True)
    found = loops.trace_loops(ctx, loops.request(0.1))
    diagnosis = loops.Diagnosis(loops.local_findings(ctx), found,
                                loops.recipient_verdicts(ctx, found))
    recorded = []
    for _ in range(2):                   # the verdict cell, run twice
        recorded.append(diagnosis.record_step(ctx))
        with pytest.raises(StepFailed, match="^Mail to adatum.ch loops"):
            ctx.conclude(*diagnosis.verdict())
    assert recorded[0]["kind"] == "diagnosis" and recorded[1] is None
    kinds = [e["kind"] for e in ctx.record.events()]
    assert (kinds.count("diagnosis"), kinds.count("verdict")) == (1, 1)


def test_step_5_watches_for_loops_as_long_as_two_more_passes_take():
    """A loop shows at its third pass (mailflow.LOOP_PASSES): the sandbox's
    hello names the hop time; a real tenant's trace lags by minutes."""
    from runbook import mailflow

    assert mailflow.settle_seconds({"trace": {"hop_s": 2.0}}, True) == 4.0
    assert mailflow.settle_seconds({"trace": {"hop_s": 0.25}}, True) == 0.5
    assert mailflow.settle_seconds({"host": "pwsh"}, False) == 120.0
