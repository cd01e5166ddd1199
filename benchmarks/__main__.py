"""Every benchmark in one run, the ratios side by side at the end.

    python -m benchmarks [--tenants N] [--only NAME[,NAME]]

Runs bench_session (when it is there), bench_chain, bench_batch and
bench_inventory in turn, prints each one's table, then one table of the
ratios against the goals of issue 8. Exit status 0 even when a goal is not
met: a benchmark measures, it does not judge; the table says which.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import time

NAMES = ("session", "chain", "batch", "inventory")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    wanted = args.only or NAMES
    results = {}
    for name in wanted:
        module = _module(name)
        if module is None:
            print(f"== bench_{name}: not there, skipped\n")
            continue
        started = time.perf_counter()
        result = module.run(args.tenants) if name == "batch" else module.run()
        results[name] = result
        print(f"== bench_{name} ({time.perf_counter() - started:.0f} s)")
        print(module.report(result), end="\n\n")
    print(ratios(results))
    return 0


def _module(name: str):
    full = f"benchmarks.bench_{name}"
    if importlib.util.find_spec(full) is None:
        return None
    return importlib.import_module(full)


def ratios(results: dict) -> str:
    """One line per measured ratio: what, value, goal, verdict."""
    rows = []
    if "session" in results:
        from benchmarks.bench_session import GOAL as SESSION_GOAL

        for case, r in results["session"].items():
            rows.append((f"fresh child / session call, {case} reply (slower path)",
                         f"{r['worst_ratio']:.1f}x", f">= {SESSION_GOAL:g}x",
                         _verdict(r["goal_met"])))
    if "chain" in results:
        r = results["chain"]
        rows.append(("tenant chain / five bare notebooks", f"{r['ratio']:.2f}",
                     "< 1.25", _verdict(r["goal_met"])))
    if "batch" in results:
        r = results["batch"]
        rows.append((f"{r['tenants']} tenants, 1 worker / 2 workers",
                     f"{r['speedup']:.2f}x", ">= 1.6x", _verdict(r["goal_met"])))
        peak = r["one"]["worker_peak_mb"]
        rows.append(("peak memory of one worker", f"{peak:.0f} MB", "(informative)", ""))
    if "inventory" in results:
        r = results["inventory"]
        rows.append((f"inventory per-object cost, x{r['objects_ratio']:.0f} objects",
                     f"{r['per_object_ratio']:.2f}", "<= 1", _verdict(r["goal_met"])))
    width = max([len(row[0]) for row in rows] + [10])
    lines = [f"{'ratio':<{width}}  {'value':>10}  {'goal':>13}  verdict"]
    lines += [f"{what:<{width}}  {value:>10}  {goal:>13}  {verdict}"
              for what, value, goal, verdict in rows]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--tenants", type=int, default=20,
                        help="tenants in the batch benchmark (default 20)")
    parser.add_argument("--only", type=lambda text: tuple(
        n.strip() for n in text.split(",") if n.strip()), default=None,
        help=f"some of {', '.join(NAMES)}")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
