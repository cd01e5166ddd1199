"""A batch of sandbox tenants with one worker and with two (issue 8).

    python -m benchmarks.bench_batch [TENANTS]

Twenty tenants (legacy-inline copies with their own names and tenant IDs,
propagation delay 0, confirmed) run through `runbook.batch.run_batch` once
with one worker and once with two; printed side by side: wall time, speed-up
(goal: two workers at least 1.6x as fast) and the peak memory of one worker
(the tenant process plus its largest child, as the tenant process measured
itself). Two workers can only be faster where there are two CPUs to use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runbook import batch, params
from runbook.sandbox import scenarios, state

TENANTS = 20
GOAL = 1.6
_BASE = "legacy-inline"


def run(tenants: int = TENANTS) -> dict:
    """Seconds and memory per worker count, and the speed-up of two workers."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        for workers in (1, 2):
            results[workers] = _batch(Path(folder) / f"w{workers}", tenants, workers)
    speedup = results[1]["seconds"] / results[2]["seconds"]
    return {"tenants": tenants, "cpus": os.cpu_count(), "one": results[1],
            "two": results[2], "speedup": speedup, "goal_met": speedup >= GOAL}


def _batch(folder: Path, tenants: int, workers: int) -> dict:
    rows = [_row(folder, n) for n in range(tenants)]
    started = time.perf_counter()
    result = batch.run_batch(rows, workers=workers, confirm=True,
                             reports_dir=folder / "reports", time_limit_s=900,
                             progress=lambda *_: None)
    seconds = time.perf_counter() - started
    failed = [o for o in result.outcomes if o.outcome != batch.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} tenants did not succeed, e.g. "
                           f"{failed[0].tenant}: {failed[0].outcome} {failed[0].detail}")
    memory = [o.peak_memory_mb for o in result.outcomes if o.peak_memory_mb]
    return {"workers": workers, "seconds": seconds,
            "per_tenant_s": statistics.median(o.duration_s for o in result.outcomes),
            "worker_peak_mb": max(memory), "worker_median_mb": statistics.median(memory)}


def _row(folder: Path, n: int) -> batch.BatchRow:
    """Tenant number `n`: the base scenario under its own name and tenant ID."""
    base = scenarios.SCENARIOS[_BASE]
    name = f"bench{n:02d}"
    # Registered in this process only: the tenant processes read the state file.
    scenarios.SCENARIOS[f"bench-{name}"] = dataclasses.replace(
        base, name=f"bench-{name}", tenant=name,
        tenant_id=state.new_guid(f"bench-batch-{name}"))
    path = folder / "tenants" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    state.save(path, scenarios.build(f"bench-{name}", propagation_delay_s=0))
    p = params.validate(tenant=name, domains=list(base.domains), region=base.region,
                        routing=base.routing, sandbox_state=str(path),
                        wait_minutes=1.0, poll_seconds=0.5)
    return batch.BatchRow(n + 2, p)


def report(r: dict) -> str:
    lines = [f"{r['tenants']} sandbox tenants, {r['cpus']} CPUs",
             f"{'workers':<9}{'wall':>9}{'per tenant':>12}{'worker peak':>13}"
             f"{'median':>9}"]
    for key in ("one", "two"):
        w = r[key]
        lines.append(f"{w['workers']:<9}{w['seconds']:>7.1f} s"
                     f"{w['per_tenant_s']:>10.1f} s{w['worker_peak_mb']:>10.0f} MB"
                     f"{w['worker_median_mb']:>6.0f} MB")
    lines.append(f"two workers {r['speedup']:.2f}x as fast (goal >= {GOAL}: "
                 f"{'met' if r['goal_met'] else 'NOT met'})")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    print(report(run(int(sys.argv[1]) if len(sys.argv) > 1 else TENANTS)))
