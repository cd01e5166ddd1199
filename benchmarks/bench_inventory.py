"""Step 3's inventory and tables on a large tenant and on one ten times its size.

    python -m benchmarks.bench_inventory

The `large` scenario (size 1) against size 10: the same cells step 3 runs
before it changes anything (read every connector and rule through the
sandbox session, classify them into the inventory table, plan the cleanup
and show its table), timed each, median of a few repeats (the small tenant
ten times as many, so that both medians rest on about the same time and a
moment's noise on a 30 ms run does not decide the ratio). The cost must grow
no faster than the number of objects: the per-object cost at size 10 over
the per-object cost at size 1 should stay at or below 1 (a fixed cost per
step makes it smaller; anything quadratic makes it grow with the size).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

from runbook import cleanup, inventory
from runbook.exchange import ExchangeOnline
from runbook.powershell import Session, sandbox_command
from runbook.sandbox import scenarios, state

SIZES = (1, 10)
REPEATS = 5
GOAL = 1.0


def run(sizes: tuple[int, int] = SIZES, repeats: int = REPEATS) -> dict:
    """Objects and seconds per phase for each size; the per-object cost ratio."""
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as folder:
        cases = {size: _case(Path(folder) / f"large-{size}.json", size,
                             repeats * max(sizes) // size)
                 for size in sizes}
    small, big = (cases[s] for s in sizes)
    per_object = ((big["total_s"] / big["objects"])
                  / (small["total_s"] / small["objects"]))
    return {"cases": cases, "objects_ratio": big["objects"] / small["objects"],
            "time_ratio": big["total_s"] / small["total_s"],
            "per_object_ratio": per_object, "goal_met": per_object <= GOAL,
            "repeats": repeats}


def _case(path: Path, size: int, repeats: int) -> dict:
    tenant = scenarios.build("large", size=size, propagation_delay_s=0)
    state.save(path, tenant)
    organization = tenant["tenant"]["initial_domain"]
    del tenant                  # the child holds the tenant, as a real one would
    timings: dict[str, list[float]] = {"take": [], "table": [], "plan": []}
    with Session(sandbox_command(path), timeout=600) as session:
        exo = ExchangeOnline(session)
        exo.connect(organization)
        for _ in range(repeats):
            before = _timed(timings["take"], lambda: inventory.take(exo))
            frame = _timed(timings["table"], lambda: inventory.table(before.items()))
            _timed(timings["plan"], lambda: cleanup.plan(before).table())
    medians = {phase: statistics.median(values) for phase, values in timings.items()}
    return {"size": size, "objects": len(frame), "repeats": repeats,
            **{f"{k}_s": v for k, v in medians.items()},
            "total_s": sum(medians.values())}


def _timed(into: list, action):
    started = time.perf_counter()
    value = action()
    into.append(time.perf_counter() - started)
    return value


def report(r: dict) -> str:
    lines = [f"{'size':<6}{'objects':>9}{'take':>10}{'table':>10}{'plan':>10}"
             f"{'total':>10}{'per object':>13}{'runs':>6}"]
    for case in r["cases"].values():
        lines.append(f"{case['size']:<6}{case['objects']:>9}{case['take_s']:>9.2f}s"
                     f"{case['table_s']:>9.2f}s{case['plan_s']:>9.2f}s"
                     f"{case['total_s']:>9.2f}s"
                     f"{case['total_s'] / case['objects'] * 1e6:>10.0f} us"
                     f"{case['repeats']:>6}")
    lines.append(f"objects x{r['objects_ratio']:.1f}, time x{r['time_ratio']:.1f}: "
                 f"per-object cost x{r['per_object_ratio']:.2f} (goal <= {GOAL}: "
                 f"{'met' if r['goal_met'] else 'NOT met'}); medians of the runs")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    print(report(run()))
