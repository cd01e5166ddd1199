"""Step 5: wait for Exchange Online to apply the new configuration, confirm mail flow.

Exchange Online needs up to ten minutes before new connectors carry mail
(seppmail365cloud.md §10 step 6), and a message shows in the trace 5-10
minutes after it was sent (exchange-objects.md §11). Mail flow counts as
confirmed when the trace shows, since the connectors were created, a message
received through the new inbound connector and one sent through the new
outbound connector. The trace rows have no connector field; the connector is
named in the detail events' Data (§11).

A loop seen here is only counted (`FlowStatus.looping`); the step notebook then
hands it to `runbook.loops.when_looping`, which diagnoses it and whose verdict
replaces this module's (loops imports this module, so not the other way round).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import pandas as pd

# A message that passes the SEPPmail connectors this often is looping (§10 caveat).
LOOP_PASSES = 3
DETAILS_PER_POLL = 25
# How long to keep watching after both directions were seen, for loops to show:
# a real tenant's trace lags by minutes; the sandbox's by the hop time its hello
# names (`trace.hop_s`): a loop shows once a message's LOOP_PASSES-th pass is in.
SETTLE_TENANT_S = 120.0


@dataclass
class FlowStatus:
    inbound: str | None = None     # MessageId seen through the new inbound connector
    outbound: str | None = None
    looping: dict[str, int] = field(default_factory=dict)   # recipient domain -> passes
    polls: int = 0
    messages_seen: int = 0

    @property
    def confirmed(self) -> bool:
        return bool(self.inbound and self.outbound)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"direction": "inbound", "confirmed": bool(self.inbound),
             "message": self.inbound or ""},
            {"direction": "outbound", "confirmed": bool(self.outbound),
             "message": self.outbound or ""}])


def observe(exo, *, since: datetime, inbound_name: str, outbound_name: str,
            status: FlowStatus, local_domains: frozenset[str] = frozenset()
            ) -> FlowStatus:
    """One look at the trace: update which directions have been seen.

    Inbound counts only for a message from outside the tenant: a looping
    outbound message also comes back through the inbound connector.
    """
    now = datetime.now(timezone.utc)
    # The trace answers at most 10 days per query (exchange-objects §11).
    start = max(since, now - timedelta(days=10) + timedelta(minutes=2))
    rows = exo.message_trace(start, now + timedelta(minutes=1))
    status.polls += 1
    status.messages_seen = len(rows)
    passes: Counter[tuple[str, str]] = Counter()
    for row in rows:
        passes[(str(row.get("MessageId")), str(row.get("RecipientAddress")))] += 1
    for row in rows[:DETAILS_PER_POLL]:
        events = exo.message_trace_detail(row["MessageTraceId"], row["RecipientAddress"])
        data = [str(e.get("Data") or "").lower() for e in events]
        sender_domain = str(row.get("SenderAddress", "")).rsplit("@", 1)[-1].lower()
        if not status.inbound and sender_domain not in local_domains and \
                any(inbound_name.lower() in d for d in data):
            status.inbound = str(row.get("MessageId"))
        if not status.outbound and any(outbound_name.lower() in d for d in data):
            status.outbound = str(row.get("MessageId"))
        sends = sum(1 for e, d in zip(events, data)
                    if str(e.get("Event", "")).upper() == "SEND" and "[seppmail" in d)
        key = (str(row.get("MessageId")), str(row.get("RecipientAddress")))
        passes[key] = max(passes[key], sends)
    for (message_id, recipient), count in passes.items():
        if count >= LOOP_PASSES:
            domain = recipient.rsplit("@", 1)[-1].lower()
            status.looping[domain] = max(status.looping.get(domain, 0), count)
    return status


def wait(exo, *, since: datetime, inbound_name: str, outbound_name: str,
         wait_seconds: float, poll_seconds: float, settle_seconds: float = 0.0,
         local_domains: frozenset[str] = frozenset(),
         progress: Callable[[float, float, FlowStatus], None] | None = None,
         clock=time.monotonic, sleep=time.sleep) -> FlowStatus:
    """Poll until both directions are confirmed, a loop shows, or time runs out.

    Once both directions are seen the trace is watched `settle_seconds` more:
    a loop needs a few passes before it shows, and its first pass looks like
    a good outbound message.
    """
    status = FlowStatus()
    started = clock()
    deadline = started + wait_seconds
    confirmed_at = None
    while True:
        observe(exo, since=since, inbound_name=inbound_name,
                outbound_name=outbound_name, status=status, local_domains=local_domains)
        now = clock()
        if progress:
            progress(now - started, wait_seconds, status)
        if status.confirmed and confirmed_at is None:
            confirmed_at = now
            deadline = min(max(deadline, now), now + settle_seconds)
        if status.looping or now >= deadline:
            return status
        sleep(max(0.0, min(poll_seconds, deadline - clock())))


def verdict(status: FlowStatus, wait_seconds: float) -> tuple[str, str]:
    if status.looping:
        domains = ", ".join(sorted(status.looping))
        return "failed", (f"Mail loops: messages to {domains} pass the SEPPmail "
                          "connectors again and again. A lasting loop usually means the "
                          "recipient's tenant is on SEPPmail.cloud without CBC; run "
                          "06-diagnose-mail-loops.")
    if status.confirmed:
        return "succeeded", ("Mail flows through the new connectors in both directions "
                             f"(inbound {status.inbound}, outbound {status.outbound}).")
    missing = [d for d, seen in (("inbound", status.inbound),
                                 ("outbound", status.outbound)) if not seen]
    return "failed", (f"After {wait_seconds / 60:.1f} minutes the trace shows no "
                      f"{' and no '.join(missing)} message through the new connectors. "
                      "Send a test message in each direction and run this step again; "
                      "if it still fails, compare the connectors in step 4's table.")


def connectors_created(exo, inbound_name: str) -> datetime | None:
    """When the new (CBC) inbound connector was created; None when there is none.

    A pre-CBC connector of the same name (a plan run before step 3) does not count.
    """
    from runbook import inventory

    for connector in exo.inbound_connectors():
        if str(connector.get("Name", "")).lower() == inbound_name.lower() and \
                inventory.classify("inbound_connector", connector).cls == inventory.CBC:
            created = connector.get("WhenCreatedUTC") or connector.get("WhenCreated")
            if isinstance(created, datetime):
                return created
            return datetime.now(timezone.utc)
    return None


def run(exo, *, since: datetime | None, inbound_name: str, outbound_name: str,
        params) -> FlowStatus:
    """Step 5's wait; a plan run, or one without the new connectors, only looks once."""
    if since is None:
        return FlowStatus()
    wait_seconds = params.wait_minutes * 60 if params.confirm else 0.0
    sandbox = params.backend == "sandbox"
    poll = min(params.poll_seconds, 1.0) if sandbox else params.poll_seconds
    settle = settle_seconds(exo.session.hello, sandbox) if params.confirm else 0.0
    local = frozenset(str(d.get("DomainName", "")).lower() for d in exo.accepted_domains())
    return wait(exo, since=since - timedelta(seconds=1), inbound_name=inbound_name,
                outbound_name=outbound_name, wait_seconds=wait_seconds,
                poll_seconds=poll, settle_seconds=settle, local_domains=local,
                progress=_print_progress)


def settle_seconds(hello: dict, sandbox: bool) -> float:
    """How long to watch for loops once mail flow is confirmed."""
    if not sandbox:
        return SETTLE_TENANT_S
    hop = float((hello.get("trace") or {}).get("hop_s") or 0.0)
    return (LOOP_PASSES - 1) * hop


def _print_progress(elapsed: float, total: float, status: FlowStatus) -> None:
    left = max(0.0, total - elapsed)
    print(f"poll {status.polls}: {status.messages_seen} messages, inbound "
          f"{'seen' if status.inbound else 'not yet'}, outbound "
          f"{'seen' if status.outbound else 'not yet'}; {left:.0f} s left", flush=True)


def step_verdict(status: FlowStatus, since: datetime | None, params) -> tuple[str, str]:
    if since is None:
        if not params.confirm:
            return "planned", ("The new connectors do not exist yet; once step 4 has "
                               "created them this step waits up to "
                               f"{params.wait_minutes:g} minutes for mail flow.")
        return "failed", "The new inbound connector does not exist: run step 4 first."
    if not params.confirm and not status.confirmed:
        return "planned", (f"Would wait up to {params.wait_minutes:g} minutes for mail "
                           "through the new connectors (confirm=False looked once).")
    return verdict(status, params.wait_minutes * 60)
