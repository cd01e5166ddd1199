"""The simulated message trace and the effectiveness delay.

§N refers to exchange-objects.md; seppmail365cloud.md is cited by name.
Every scenario is built with traffic starting an hour before NOW: one inbound
message every 5 s at :00/:05/…, one outbound 2.5 s later; rows visible 1 s
after the message; changes take effect `propagation_delay_s` after they are made.
"""

from datetime import datetime, timedelta, timezone

import pytest

from runbook.sandbox import scenarios, trace
from runbook.sandbox.registry import CmdletError
from runbook.sandbox.state import iso
from runbook.sandbox.tenant import Tenant

NOW = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
FIELDS = {"MessageTraceId", "MessageId", "Received", "SenderAddress",
          "RecipientAddress", "FromIP", "ToIP", "Subject", "Status", "Size"}
CONTOSO_CERT = "2c4f6a8e-1b3d-4e5f-9a7b-0c1d2e3f4a5b.ch.seppmail.cloud"


class Clock:
    def __init__(self, moment=NOW):
        self.moment = moment

    def __call__(self):
        return self.moment


def tenant_of(name, delay=60.0, clock=None):
    built = scenarios.build(name, now=NOW, propagation_delay_s=delay)
    tenant = Tenant(built, clock=clock or Clock())
    tenant.invoke("Connect-ExchangeOnline",
                  Organization=built["tenant"]["initial_domain"])
    return tenant


def trace_rows(tenant, **params):
    return tenant.invoke("Get-MessageTraceV2", **params)


def detail(tenant, row):
    return tenant.invoke("Get-MessageTraceDetailV2",
                         MessageTraceId=row["MessageTraceId"],
                         RecipientAddress=row["RecipientAddress"])


def newest(tenant, recipient, **params):
    return trace_rows(tenant, RecipientAddress=recipient, ResultSize=1, **params)[0]


def to_cbc(tenant):
    """The CBC inline connector values of seppmail365cloud.md §3.1."""
    tenant.invoke("Set-InboundConnector", Identity="[SEPPmail.cloud] Inbound-InLine",
                  SenderDomains=["smtp:*;1"], TlsSenderCertificateName=CONTOSO_CERT
                  if tenant.state["tenant"]["name"] == "contoso" else
                  f"{tenant.state['tenant']['tenant_id']}.ch.seppmail.cloud")


def test_rows_have_the_v2_fields_and_no_connector():
    """§11: MessageTraceId … Size; no connector field, no Organization."""
    rows = trace_rows(tenant_of("legacy-inline"), ResultSize=4)
    assert [set(r) for r in rows] == [FIELDS] * 4


def test_rows_come_newest_first_with_seven_digit_fractions():
    """§11: Received descending, UTC `…0000000Z`."""
    rows = trace_rows(tenant_of("legacy-inline"), ResultSize=4)
    assert [r["Received"] for r in rows] == [
        "2026-03-02T07:59:57.5000000Z", "2026-03-02T07:59:55.0000000Z",
        "2026-03-02T07:59:52.5000000Z", "2026-03-02T07:59:50.0000000Z"]


def test_rows_appear_only_after_the_trace_latency():
    """§11 "Latency": a message shows only after the trace delay (1 s here)."""
    clock = Clock(NOW + timedelta(seconds=0.5))
    tenant = tenant_of("legacy-inline", clock=clock)
    assert trace_rows(tenant, ResultSize=1)[0]["Received"].startswith(
        "2026-03-02T07:59:57.5")
    clock.moment = NOW + timedelta(seconds=1)
    assert trace_rows(tenant, ResultSize=1)[0]["Received"].startswith(
        "2026-03-02T08:00:00.0")


def test_inline_inbound_arrives_from_the_gate_and_outbound_leaves_by_relay():
    """seppmail365cloud.md §4: MX at the gate; §3.1 smarthost relay host."""
    tenant = tenant_of("legacy-inline")
    inbound = newest(tenant, "anna.meier@contoso.ch")
    assert (inbound["FromIP"], inbound["ToIP"], inbound["Status"]) == (
        "86.119.35.35", "", "Delivered")
    outbound = newest(tenant, "orders@partner.example")
    assert outbound["ToIP"] == "86.119.38.33"
    events = detail(tenant, outbound)
    assert [e["Event"] for e in events] == ["RECEIVE", "SEND"]
    assert "TenantOutboundConnectorCustomData=" in events[1]["Data"]
    assert "Name=[SEPPmail.cloud] Outbound-InLine" in events[1]["Data"]


def test_pre_cbc_inline_inbound_is_not_attributed_to_the_connector():
    """seppmail365cloud.md §3.3: 1.2.5 SenderDomains smtp:*.ch.seppmail.cloud;1
    do not cover partner mail, so no connector is named on RECEIVE."""
    tenant = tenant_of("legacy-inline")
    events = detail(tenant, newest(tenant, "anna.meier@contoso.ch"))
    assert [e["Event"] for e in events] == ["RECEIVE", "DELIVER"]
    assert "InboundConnectorData" not in events[0]["Data"]


def test_parallel_inbound_goes_out_to_seppmail_and_comes_back():
    """seppmail365cloud.md §2.3 rule 100 routes via Outbound-Parallel; the
    message returns through Inbound-Parallel: two rows, one MessageId."""
    tenant = tenant_of("legacy-parallel")
    returned, first = trace_rows(tenant, RecipientAddress="anna.meier@fabrikam.com",
                                 ResultSize=2)
    assert returned["MessageId"] == first["MessageId"]
    assert (first["FromIP"], first["ToIP"]) == ("203.0.113.25", "162.55.155.177")
    assert returned["FromIP"] == "162.55.155.177"
    assert "Name=[SEPPmail.cloud] Outbound-Parallel" in detail(tenant, first)[1]["Data"]
    back = detail(tenant, returned)
    assert "InboundConnectorData=Name=[SEPPmail.cloud] Inbound-Parallel" in \
        back[0]["Data"]
    assert back[-1]["Event"] == "DELIVER"


def test_changes_take_effect_after_the_propagation_delay():
    """design.md "The sandbox", seppmail365cloud.md §10 step 6 (wait up to 10
    minutes): a change counts from T + propagation_delay_s."""
    clock = Clock()
    tenant = tenant_of("legacy-inline", delay=60, clock=clock)
    to_cbc(tenant)
    clock.moment = NOW + timedelta(minutes=2)
    rows = trace_rows(tenant, RecipientAddress="anna.meier@contoso.ch",
                      StartDate=iso(NOW + timedelta(seconds=50)),
                      EndDate=iso(NOW + timedelta(seconds=70)))
    named = {r["Received"][11:19]: "Inbound-InLine" in detail(tenant, r)[0]["Data"]
             for r in rows}
    assert named == {"08:01:10": True, "08:01:05": True, "08:01:00": True,
                     "08:00:55": False, "08:00:50": False}


def test_effective_connectors_undo_changes_not_yet_in_effect():
    """seppmail365cloud.md §10 step 6: until the delay has passed, the
    configuration in effect is the one before the change."""
    clock = Clock()
    tenant = tenant_of("legacy-parallel", delay=30, clock=clock)
    tenant.invoke("Remove-TransportRule",
                  Identity="[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail")
    clock.moment = NOW + timedelta(seconds=10)
    tenant.invoke("New-InboundConnector", Name="Late", SenderDomains="late.ch")
    state = tenant.state

    def rule_names(at):
        return [r["Name"] for r in trace.effective_connectors(state, at)[
            "transport_rules"]]

    assert "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail" in rule_names(
        NOW + timedelta(seconds=29))
    assert "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail" not in \
        rule_names(NOW + timedelta(seconds=30))
    late = [c["Name"] for c in trace.effective_connectors(
        state, NOW + timedelta(seconds=39))["inbound_connectors"]]
    assert "Late" not in late
    assert "Late" in [c["Name"] for c in trace.effective_connectors(
        state, NOW + timedelta(seconds=40))["inbound_connectors"]]
    assert [r["Priority"] for r in trace.effective_connectors(
        state, NOW)["transport_rules"]] == list(range(9))
    assert rule_names(NOW)[2:5] == [
        "[SEPPmail.cloud] - 050 on SPF fail - no SEPPmail.Cloud",
        "[SEPPmail.cloud] - 100 Route incoming e-mails to SEPPmail",
        "[SEPPmail.cloud] - 200 Route outgoing e-mails to SEPPmail"]


def test_parallel_without_rules_delivers_directly_once_in_effect():
    """seppmail365cloud.md §10 step 4: with the rules gone, mail bypasses SEPPmail."""
    clock = Clock()
    tenant = tenant_of("legacy-parallel", delay=5, clock=clock)
    for rule in ("100 Route incoming", "200 Route outgoing"):
        tenant.invoke("Remove-TransportRule",
                      Identity=f"[SEPPmail.cloud] - {rule} e-mails to SEPPmail")
    clock.moment = NOW + timedelta(seconds=30)
    row = newest(tenant, "anna.meier@fabrikam.com")
    assert (row["FromIP"], row["ToIP"]) == ("203.0.113.25", "")
    assert [e["Event"] for e in detail(tenant, row)] == ["RECEIVE", "DELIVER"]
    assert newest(tenant, "orders@partner.example")["ToIP"] == "198.51.100.10"


def test_cbc_connector_rejects_mail_without_the_tenant_certificate():
    """seppmail365cloud.md §3.2/§10: CBC needs SEPPmail.cloud prepared first;
    otherwise its shared certificate fails the restricted Partner connector."""
    clock = Clock()
    tenant = tenant_of("not-prepared", delay=5, clock=clock)
    to_cbc(tenant)
    clock.moment = NOW + timedelta(seconds=30)
    row = newest(tenant, "anna.meier@wingtiptoys.ch")
    assert row["Status"] == "Failed"
    events = detail(tenant, row)
    assert events[-1]["Event"] == "FAIL"
    assert "550 5.7.51 TenantInboundAttribution" in events[-1]["Detail"]
    assert "[Name=[SEPPmail.cloud] Inbound-InLine]" in events[-1]["Detail"]


def test_cbc_with_mx_at_microsoft_rejects_direct_mail():
    """seppmail365cloud.md §4: inline needs the MX at the gate host."""
    clock = Clock()
    tenant = tenant_of("wrong-mx", delay=5, clock=clock)
    to_cbc(tenant)
    clock.moment = NOW + timedelta(seconds=30)
    row = newest(tenant, "anna.meier@adventure-works.ch")
    assert (row["FromIP"], row["Status"]) == ("203.0.113.25", "Failed")


def test_cbc_inline_inbound_is_attributed_to_the_new_connector():
    """seppmail365cloud.md §3.1: prepared tenant, tenant certificate matches."""
    clock = Clock()
    tenant = tenant_of("legacy-inline", delay=5, clock=clock)
    to_cbc(tenant)
    clock.moment = NOW + timedelta(seconds=30)
    events = detail(tenant, newest(tenant, "anna.meier@contoso.ch"))
    assert events[0]["Data"].startswith(
        "S:InboundConnectorData=Name=[SEPPmail.cloud] Inbound-InLine;")
    assert events[-1]["Event"] == "DELIVER"


def test_mail_loop_repeats_one_message_id_until_the_hop_limit():
    """seppmail365cloud.md §10: lasting loops when the recipient tenant is on
    SEPPmail.cloud without CBC; Exchange fails the message at the hop limit."""
    tenant = tenant_of("mail-loop")
    rows = trace_rows(tenant, RecipientAddress="info@adatum.ch",
                      StartDate=iso(NOW - timedelta(minutes=5)),
                      EndDate=iso(NOW))
    by_id = {}
    for row in rows:
        by_id.setdefault(row["MessageId"], []).append(row)
    complete = [group for group in by_id.values() if len(group) == trace.MAX_HOPS]
    assert complete
    group = sorted(complete[0], key=lambda r: r["Received"])
    assert [r["Status"] for r in group] == ["Delivered"] * 5 + ["Failed"]
    events = detail(tenant, group[-1])
    receives = [e for e in events if e["Event"] == "RECEIVE"
                and "Name=[SEPPmail.cloud] Inbound-InLine" in e["Data"]]
    sends = [e for e in events if e["Event"] == "SEND"
             and "Name=[SEPPmail.cloud] Outbound-InLine" in e["Data"]]
    assert (len(receives), len(sends)) == (5, 6)
    assert "5.4.14 Hop count exceeded" in events[-1]["Detail"]


@pytest.mark.parametrize("hop_s", [None, 0.25])
def test_a_looping_message_passes_again_after_the_tenants_hop_time(hop_s):
    """§10's lasting loop, in sandbox time: the passes of one message are
    `traffic.hop_s` apart (2 s by default), and the hello names that time so
    step 5 knows how long a loop takes to show."""
    from runbook.sandbox.server import hello

    built = scenarios.build("mail-loop", now=NOW, propagation_delay_s=60.0)
    if hop_s is not None:
        built["traffic"]["hop_s"] = hop_s
    tenant = Tenant(built, clock=Clock())
    tenant.invoke("Connect-ExchangeOnline", Organization=built["tenant"]["initial_domain"])
    rows = trace_rows(tenant, RecipientAddress="info@adatum.ch",
                      StartDate=iso(NOW - timedelta(minutes=5)), EndDate=iso(NOW))
    by_id = {}
    for row in rows:
        by_id.setdefault(row["MessageId"], []).append(row["Received"])
    group = sorted(next(g for g in by_id.values() if len(g) == trace.MAX_HOPS))
    moments = [datetime.fromisoformat(str(r).replace("Z", "+00:00")) for r in group]
    gaps = {round((b - a).total_seconds(), 3) for a, b in zip(moments, moments[1:])}
    assert gaps == {hop_s or 2.0}
    assert hello(built, None)["trace"] == {"hop_s": hop_s or 2.0, "latency_s": 1.0}


def test_result_size_truncates_with_the_more_results_warning():
    """§11: truncation shows only as the warning."""
    tenant = tenant_of("legacy-inline")
    assert len(trace_rows(tenant, ResultSize=3)) == 3
    assert tenant.take_warnings() == [
        "There are more results, use the following command to get more."]
    trace_rows(tenant, StartDate=iso(NOW - timedelta(seconds=9)), EndDate=iso(NOW),
               ResultSize=10)
    assert tenant.take_warnings() == []


@pytest.mark.parametrize("size", [0, 5001])
def test_result_size_is_limited_to_5000(size):
    """§11: ResultSize 1–5000."""
    with pytest.raises(CmdletError) as caught:
        trace_rows(tenant_of("legacy-inline"), ResultSize=size)
    assert caught.value.error_id == "ParameterArgumentValidationError"


@pytest.mark.parametrize("params, fragment", [
    ({"StartDate": "2026-03-01T00:00:00Z"}, "must be used together"),
    ({"StartDate": "2026-02-01T00:00:00Z", "EndDate": "2026-02-12T00:00:00Z"},
     "more than 10 days"),
    ({"StartDate": "2025-11-01T00:00:00Z", "EndDate": "2025-11-02T00:00:00Z"},
     "older than 90 days"),
    ({"StartDate": "2026-03-02T00:00:00Z", "EndDate": "2026-03-01T00:00:00Z"},
     "earlier than the StartDate"),
])
def test_date_window_limits(params, fragment):
    """§11: 10 days per query, 90 days of history."""
    with pytest.raises(CmdletError, match=fragment):
        trace_rows(tenant_of("legacy-inline"), **params)


def test_filters_by_sender_recipient_and_message_id():
    """§11 filters: SenderAddress, RecipientAddress, MessageId."""
    tenant = tenant_of("legacy-inline")
    window = {"StartDate": iso(NOW - timedelta(seconds=20)), "EndDate": iso(NOW)}
    sent = trace_rows(tenant, SenderAddress="ANNA.MEIER@contoso.ch", **window)
    assert {r["RecipientAddress"] for r in sent} == {"orders@partner.example"}
    assert len(sent) == 4
    one = trace_rows(tenant, MessageId=[sent[0]["MessageId"]], **window)
    assert [r["MessageTraceId"] for r in one] == [sent[0]["MessageTraceId"]]


def test_next_page_repeats_the_boundary_row():
    """§11: next page with -EndDate = last Received, -StartingRecipientAddress."""
    tenant = tenant_of("legacy-parallel")
    start = iso(NOW - timedelta(minutes=10))
    page1 = trace_rows(tenant, StartDate=start, EndDate=iso(NOW), ResultSize=3)
    last = page1[-1]
    page2 = trace_rows(tenant, StartDate=start, EndDate=last["Received"],
                       StartingRecipientAddress=last["RecipientAddress"],
                       ResultSize=3)
    assert page2[0]["MessageTraceId"] == last["MessageTraceId"]


def test_detail_of_an_unknown_or_mismatched_row_is_empty():
    """exchange-objects.md §11 Detail: Get-MessageTraceDetailV2 returns nothing
    for what it cannot find [I]."""
    tenant = tenant_of("legacy-inline")
    row = newest(tenant, "anna.meier@contoso.ch")
    assert tenant.invoke("Get-MessageTraceDetailV2", RecipientAddress="x@y.ch",
                         MessageTraceId=row["MessageTraceId"]) == []
    assert tenant.invoke("Get-MessageTraceDetailV2", RecipientAddress="x@y.ch",
                         MessageTraceId="00000000-0000-0000-0000-000000000000") == []


def test_detail_rows_name_the_message():
    """§11 Detail rows: Organization, MessageId, MessageTraceId, Date, Event…"""
    tenant = tenant_of("legacy-inline")
    row = newest(tenant, "anna.meier@contoso.ch")
    first = detail(tenant, row)[0]
    assert set(first) == {"Organization", "MessageId", "MessageTraceId", "Date",
                          "Event", "Action", "Detail", "Data", "SenderAddress",
                          "RecipientAddress"}
    assert (first["MessageId"], first["Organization"]) == (
        row["MessageId"], "contoso.onmicrosoft.com")


def test_trace_cmdlets_need_the_connection():
    """§7: the trace cmdlets are EXO cmdlets too."""
    tenant = Tenant(scenarios.build("legacy-inline", now=NOW), clock=Clock())
    with pytest.raises(CmdletError) as caught:
        tenant.invoke("Get-MessageTraceV2")
    assert caught.value.error_id == "CommandNotFoundException"
