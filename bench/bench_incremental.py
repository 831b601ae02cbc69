"""Cost of a daily incremental warehouse build against a full build, at 30 and 90 days of history.

    .state/venv/bin/python bench/bench_incremental.py [--per-day 33334] [--histories 30 90]

For each history length H: simulate H + 1 days at a constant volume per day, hold the newest day
back, full-build the H days, then add the held day and time the incremental build (what a
daily scheduled run does), ``--repeats`` times from copies of the same built state (median and
fastest). Prints both times and their ratio per history, plus the incremental time at each H
against the one at the first H (the goal: the daily cost does not grow with the history). Each
history runs in a state dir of its own under ``--home``; times are wall clock on a shared
machine, so compare the ratios measured in this run, not absolute seconds across runs.
The load average is printed before and after, to say how shared the machine was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

# A fixed end date keeps every run of the bench on the same data.
END_DATE = date(2026, 11, 1)


def measure(history: int, per_day: int, home: Path, repeats: int = 3) -> dict[str, float]:
    """Full build of ``history`` days, then the incremental build of one more day ``repeats``
    times, each from a copy of the same fully built state; seconds (the incremental's median,
    so one stall of a shared machine does not decide the ratio)."""
    from datetime import UTC, datetime

    from rankflow.config import load_config
    from rankflow.data.simulate import simulate
    from rankflow.paths import StatePaths
    from rankflow.warehouse.build import build_warehouse

    shutil.rmtree(home, ignore_errors=True)
    paths = StatePaths(home)
    config = load_config(
        overrides={
            "simulation.n_impressions": per_day * (history + 1),
            "simulation.days": history + 1,
            "simulation.end_date": END_DATE.isoformat(),
        }
    )
    simulate(config.simulation, paths.raw, paths.truth)
    partitions = sorted((paths.raw / "impressions").iterdir())
    held = home.parent / f"{home.name}-held-back" / partitions[-1].name
    shutil.rmtree(held.parent, ignore_errors=True)
    held.parent.mkdir(parents=True)
    partitions[-1].rename(held)
    as_of = datetime.combine(END_DATE, datetime.min.time(), tzinfo=UTC)
    vars = config.warehouse.model_dump()
    start = time.perf_counter()
    build_warehouse(paths, as_of=as_of, vars=vars, full_refresh=True)
    full = time.perf_counter() - start
    built = home.parent / f"{home.name}-built"
    shutil.rmtree(built, ignore_errors=True)
    shutil.copytree(home, built, symlinks=True)
    times, phases = [], []
    for attempt in range(repeats):
        if attempt:
            shutil.rmtree(home)
            shutil.copytree(built, home, symlinks=True)
        shutil.copytree(held, partitions[-1])
        start = time.perf_counter()
        result = build_warehouse(paths, as_of=as_of, vars=vars)
        times.append(time.perf_counter() - start)
        phases.append(result.phases)
    print(f"  {history} days: {result.plan}; incremental s {', '.join(f'{t:.2f}' for t in times)}",
          flush=True)  # fmt: skip
    median_phases = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    print(
        f"  {history} days, median s per step: "
        + ", ".join(f"{k} {v:.2f}" for k, v in median_phases.items()),
        flush=True,
    )
    shutil.rmtree(built)
    shutil.rmtree(held.parent)
    return {
        "full": full,
        "incremental": statistics.median(times),
        "fastest": min(times),
        **{f"step:{k}": v for k, v in median_phases.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=33_334, help="impressions per day")
    parser.add_argument("--histories", type=int, nargs="+", default=[30, 90])
    parser.add_argument("--home", type=Path, default=REPO / ".state" / "bench" / "incremental")
    parser.add_argument("--keep", action="store_true", help="keep the state dirs to inspect")
    parser.add_argument("--repeats", type=int, default=3, help="incremental builds per history")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.home = args.home.resolve()

    load_before = os.getloadavg()
    results = {
        h: measure(h, args.per_day, args.home / f"{h}d", args.repeats) for h in args.histories
    }
    if not args.keep:
        shutil.rmtree(args.home, ignore_errors=True)
    first = args.histories[0]
    print(f"\nincremental warehouse build of one new day, {args.per_day:,} impressions per day")
    print(
        f"  load average (1, 5, 15 min) before {_load(load_before)}, after {_load(os.getloadavg())}"
        f" on {os.cpu_count()} CPUs"
    )
    print(
        f"  {'history':>8} {'full s':>8} {'incr. s':>8} {'incr./full':>11} "
        f"{'incr./incr.@' + str(first):>14} {'fastest/fastest@' + str(first):>18}"
    )
    for h, r in results.items():
        print(
            f"  {h:>6} d {r['full']:8.2f} {r['incremental']:8.2f} "
            f"{r['incremental'] / r['full']:11.2f} "
            f"{r['incremental'] / results[first]['incremental']:14.2f} "
            f"{r['fastest'] / results[first]['fastest']:18.2f}"
        )
    steps = [k for k in results[first] if k.startswith("step:")]
    print(
        "\n  where the incremental build's time goes (median s per step; the last column: growth)"
    )
    for key in steps:
        row = " ".join(f"{results[h].get(key, 0.0):8.2f}" for h in args.histories)
        growth = results[args.histories[-1]].get(key, 0.0) - results[first][key]
        print(f"  {key[5:]:>10} {row} {growth:+8.2f}")


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
