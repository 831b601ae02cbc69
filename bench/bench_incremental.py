"""Cost of a daily incremental warehouse build against a full build, at 30 and 90 days of history.

    .state/venv/bin/python bench/bench_incremental.py [--per-day 33334] [--histories 30 90]

For each history length H: simulate H + 1 days at a constant volume per day, hold the newest day
back, full-build the H days. Then add the held day and time the incremental build (what a
daily scheduled run does), ``--repeats`` rounds, each from a copy of the same built state. The
histories take turns inside each round (in alternating order, ABBA), so a slow spell of a shared
machine hits every history alike instead of one of them. Prints the full and the incremental
time (median) per history and their ratio, and the incremental time at each H against the one at
the first H, both as a ratio of medians and as the median of the per-round ratios (paired: the
goal is that the daily cost does not grow with the history). Each history runs in a state dir
of its own under ``--home``; times are wall clock on a shared machine, so compare the ratios
measured in this run, not absolute seconds across runs. The load average is printed before
and after, to say how shared the machine was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

# A fixed end date keeps every run of the bench on the same data.
END_DATE = date(2026, 11, 1)


@dataclass
class History:
    """One history length's built state and its measurements."""

    days: int
    home: Path
    held: Path  # the newest day's partition, held back for the incremental build
    partition: Path  # where the held day goes back into the raw folder
    vars: dict[str, Any]
    full: float = 0.0
    times: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    plan: str = ""

    @property
    def built(self) -> Path:
        return self.home.parent / f"{self.home.name}-built"


def prepare(history: int, per_day: int, home: Path) -> History:
    """Simulate ``history`` + 1 days, hold the newest back, full-build the rest (timed) and keep
    a pristine copy of the built state for the incremental rounds."""
    from rankflow.config import load_config
    from rankflow.paths import StatePaths
    from rankflow.sim.simulate import simulate
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
    state = History(history, home, held, partitions[-1], config.warehouse.model_dump())
    start = time.perf_counter()
    build_warehouse(paths, as_of=_as_of(), vars=state.vars, full_refresh=True)
    state.full = time.perf_counter() - start
    shutil.rmtree(state.built, ignore_errors=True)
    shutil.copytree(home, state.built, symlinks=True)
    return state


def incremental_round(state: History) -> None:
    """One incremental build of the held day, from a fresh copy of the built state."""
    from rankflow.paths import StatePaths
    from rankflow.warehouse.build import build_warehouse

    shutil.rmtree(state.home)
    shutil.copytree(state.built, state.home, symlinks=True)
    shutil.copytree(state.held, state.partition)
    start = time.perf_counter()
    result = build_warehouse(StatePaths(state.home), as_of=_as_of(), vars=state.vars)
    state.times.append(time.perf_counter() - start)
    state.phases.append(result.phases)
    state.plan = str(result.plan)
    print(f"  {state.days} days: incremental s {state.times[-1]:.2f}", flush=True)


def _as_of() -> Any:
    from datetime import UTC, datetime

    return datetime.combine(END_DATE, datetime.min.time(), tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=33_334, help="impressions per day")
    parser.add_argument("--histories", type=int, nargs="+", default=[30, 90])
    parser.add_argument("--home", type=Path, default=REPO / ".state" / "bench" / "incremental")
    parser.add_argument("--keep", action="store_true", help="keep the state dirs to inspect")
    parser.add_argument("--repeats", type=int, default=5, help="incremental rounds per history")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.home = args.home.resolve()

    load_before = os.getloadavg()
    states = [prepare(h, args.per_day, args.home / f"{h}d") for h in args.histories]
    for round_ in range(args.repeats):
        for state in states if round_ % 2 == 0 else reversed(states):  # ABBA
            incremental_round(state)
    for state in states:
        print(f"  {state.days} days: {state.plan}")
        shutil.rmtree(state.built)
        shutil.rmtree(state.held.parent)
    if not args.keep:
        shutil.rmtree(args.home, ignore_errors=True)
    report(states, args.per_day, load_before)


def report(states: list[History], per_day: int, load_before: tuple[float, float, float]) -> None:
    first = states[0]
    print(f"\nincremental warehouse build of one new day, {per_day:,} impressions per day")
    print(
        f"  load average (1, 5, 15 min) before {_load(load_before)}, after {_load(os.getloadavg())}"
        f" on {os.cpu_count()} CPUs; {len(first.times)} interleaved rounds"
    )
    print(
        f"  {'history':>8} {'full s':>8} {'incr. s':>8} {'incr./full':>11} "
        f"{'incr./incr.@' + str(first.days):>14} {'paired, median':>15} {'min..max':>12}"
    )
    for state in states:
        median = statistics.median(state.times)
        paired = [t / t0 for t, t0 in zip(state.times, first.times, strict=True)]
        print(
            f"  {state.days:>6} d {state.full:8.2f} {median:8.2f} {median / state.full:11.2f} "
            f"{median / statistics.median(first.times):14.2f} {statistics.median(paired):15.2f} "
            f"{min(paired):5.2f}..{max(paired):.2f}"
        )
    print(
        "\n  where the incremental build's time goes (median s per step; the last column: growth)"
    )
    medians = [
        {k: statistics.median(p.get(k, 0.0) for p in s.phases) for k in s.phases[0]} for s in states
    ]
    for key in medians[0]:
        row = " ".join(f"{m.get(key, 0.0):8.2f}" for m in medians)
        print(f"  {key:>10} {row} {medians[-1].get(key, 0.0) - medians[0][key]:+8.2f}")


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
