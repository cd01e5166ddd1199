"""One persistent sandbox session against a fresh child per call.

    python -m benchmarks.bench_session

A notebook run alone keeps one `Session` open; the steps of a chain run
share the chain's through its broker socket (`RemoteSession`); the
alternative would be to start a child for every command. This measures the
three for a small reply (Get-AcceptedDomain) and a large one
(Get-TransportRule on the `large` scenario, or, while that scenario does not
exist, legacy-inline with its rules copied up to LARGE_RULES), and prints the
medians side by side with their ratios from this one run. A fresh child pays
interpreter start, state load, the hello and Connect-ExchangeOnline each
time; on a real tenant (pwsh, module import, sign-in) that cost is seconds,
not milliseconds.

The goal of issue 8: a session call at least GOAL times cheaper than a child
per call. It is judged on the slower of the two session paths in each case.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from runbook.powershell import Session, sandbox_command
from runbook.powershell.broker import RemoteSession, SessionBroker
from runbook.sandbox import scenarios, state

GOAL = 20.0
LARGE_RULES = 2000
PERSISTENT_CALLS = 20
FRESH_CALLS = 5


def run(persistent_calls: int = PERSISTENT_CALLS,
        fresh_calls: int = FRESH_CALLS) -> dict:
    """Medians in ms per case: {"small": {...}, "large": {...}}."""
    with tempfile.TemporaryDirectory(prefix="bench-session-") as folder:
        small = _save(Path(folder) / "small.state.json",
                      scenarios.build("legacy-inline"))
        large_state, large_source = _large_state()
        large = _save(Path(folder) / "large.state.json", large_state)
        large_calls = max(persistent_calls // 4, 1)
        return {
            "small": _case("Get-AcceptedDomain", small, persistent_calls, fresh_calls),
            "large": dict(_case("Get-TransportRule", large, large_calls, fresh_calls),
                          source=large_source),
        }


def _case(command: str, state_path: Path, persistent_calls: int,
          fresh_calls: int) -> dict:
    organization = state.load(state_path)["tenant"]["initial_domain"]
    with Session(sandbox_command(state_path), timeout=120) as session:
        session.invoke("Connect-ExchangeOnline", Organization=organization)
        output = session.invoke(command)
        persistent = [_timed(lambda: session.invoke(command))
                      for _ in range(persistent_calls)]
        with SessionBroker(session) as broker, RemoteSession(broker.path) as remote:
            shared = [_timed(lambda: remote.invoke(command))
                      for _ in range(persistent_calls)]
    fresh = [_timed(lambda: _fresh_call(state_path, organization, command))
             for _ in range(fresh_calls)]
    persistent_ms, fresh_ms = statistics.median(persistent), statistics.median(fresh)
    shared_ms = statistics.median(shared)
    worst = fresh_ms / max(persistent_ms, shared_ms)
    return {"command": command, "records": len(output),
            "reply_kb": len(json.dumps(output).encode()) / 1000,
            "persistent_ms": persistent_ms, "shared_ms": shared_ms,
            "fresh_child_ms": fresh_ms, "ratio": fresh_ms / persistent_ms,
            "shared_ratio": fresh_ms / shared_ms, "worst_ratio": worst,
            "goal_met": worst >= GOAL}


def _fresh_call(state_path: Path, organization: str, command: str) -> list:
    with Session(sandbox_command(state_path), timeout=120) as session:
        session.invoke("Connect-ExchangeOnline", Organization=organization)
        return session.invoke(command)


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _large_state() -> tuple[dict, str]:
    if "large" in scenarios.names():
        return scenarios.build("large"), "scenario large"
    base = scenarios.build("legacy-inline")
    rules = base["transport_rules"]
    copies = []
    for index in range(LARGE_RULES):
        rule = copy.deepcopy(rules[index % len(rules)])
        rule_name = f"{rule['Name']} copy {index:04d}"
        rule.update(Name=rule_name, Identity=rule_name, Priority=index,
                    Guid=state.new_guid(f"bench-rule-{index}"))
        copies.append(rule)
    base["transport_rules"] = copies
    return base, f"legacy-inline with {LARGE_RULES} copied rules"


def _save(path: Path, tenant: dict) -> Path:
    state.save(path, tenant)
    return path


def report(results: dict) -> str:
    lines = [f"{'case':<7}{'command':<20}{'records':>8}{'reply':>11}{'session':>12}"
             f"{'shared':>12}{'fresh child':>14}{'ratios':>16}"]
    for case, r in results.items():
        lines.append(f"{case:<7}{r['command']:<20}{r['records']:>8}"
                     f"{r['reply_kb']:>8.0f} kB"
                     f"{r['persistent_ms']:>9.1f} ms{r['shared_ms']:>9.1f} ms"
                     f"{r['fresh_child_ms']:>11.1f} ms"
                     f"{r['ratio']:>8.1f}x /{r['shared_ratio']:>5.1f}x")
    lines.append("session: one Session; shared: the same through its broker socket "
                 "(a chain's steps); ratios: fresh child over each")
    lines.append(f"large reply source: {results['large']['source']}; medians of one "
                 "run on this machine")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    print(report(run()))
