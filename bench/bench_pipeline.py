"""Stage timings of the main job, and Feast's point-in-time retrieval against a DuckDB floor.

    .state/venv/bin/python bench/bench_pipeline.py [--impressions 1000000] [--repeats 3]

Runs in a state dir of its own (``.state/bench/pipeline`` unless ``--home``). Prints seconds per
stage and, because absolute times drift on a shared machine, ratios against baselines measured
in the same run:
- incremental dbt build of one new day vs the full build of all days before it;
- Feast ``get_historical_features`` through ``ctr_ranker_v1`` vs a hand-written DuckDB
  ``ASOF JOIN`` over the same parquet exports (the floor), best of ``--repeats``; the two
  results are compared value by value so the floor is known to compute the same thing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    runs = [timed(fn) for _ in range(repeats)]
    return min(r[0] for r in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--home", type=Path, default=REPO / ".state" / "bench" / "pipeline")
    args = parser.parse_args()

    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)

    from pit_floor import asof_join, service_views

    from rankflow.config import load_config
    from rankflow.data.contract import validate_raw
    from rankflow.features.store import open_store, refresh_online_store
    from rankflow.features.training_set import ENTITY_COLUMNS, load_entity_df
    from rankflow.paths import StatePaths
    from rankflow.sim.simulate import simulate
    from rankflow.warehouse.build import build_warehouse

    config = load_config(overrides={"simulation.n_impressions": args.impressions})
    paths = StatePaths(args.home.resolve())  # explicit: this process's environment is untouched
    seconds: dict[str, float] = {}
    raw_dir = config.resolved_raw_dir(paths)

    def build_warehouse_step() -> object:
        return build_warehouse(paths, vars=config.warehouse.model_dump(), raw_dir=raw_dir)

    seconds["simulate"], _ = timed(lambda: simulate(config.simulation, raw_dir, paths.truth))
    seconds["validate"], _ = timed(lambda: validate_raw(raw_dir))

    # Hold the newest day back, build everything before it, then add it incrementally.
    partitions = sorted((paths.raw / "impressions").iterdir())
    held = args.home / "held-back" / partitions[-1].name
    held.parent.mkdir()
    partitions[-1].rename(held)
    seconds["dbt full build (all days but one)"], _ = timed(build_warehouse_step)
    held.rename(partitions[-1])
    seconds["dbt incremental build (+1 day)"], _ = timed(build_warehouse_step)
    seconds["feast apply + materialize"], _ = timed(lambda: refresh_online_store(paths))

    entity_df = load_entity_df(paths)
    with open_store(paths) as store:
        service = store.get_feature_service("ctr_ranker_v1")
        views = service_views(store, "ctr_ranker_v1")

        def feast_join() -> pd.DataFrame:
            return store.get_historical_features(
                entity_df=entity_df, features=service, full_feature_names=False
            ).to_df()

        seconds["feast get_historical_features"], feast_df = best_of(args.repeats, feast_join)
    seconds["duckdb ASOF JOIN floor"], floor_df = best_of(
        args.repeats, lambda: asof_join(views, entity_df)
    )

    compared = [f for v in views for f in v.features]
    left = feast_df.set_index("event_id").sort_index()[compared]
    right = floor_df.set_index("event_id").sort_index()[compared]
    mismatches = 0
    for column in compared:
        a, b = left[column], right[column]
        if a.dtype.kind in "fiu" or b.dtype.kind in "fiu":
            same = np.isclose(a.astype(float), b.astype(float), equal_nan=True)
        else:
            same = (a.fillna("<null>").astype(str) == b.fillna("<null>").astype(str)).to_numpy()
        mismatches += int((~same).sum())

    width = max(map(len, seconds))
    print(
        f"\nrankflow pipeline benchmark: {args.impressions:,} impressions, {len(entity_df):,} rows"
    )
    for stage, value in seconds.items():
        print(f"  {stage:<{width}}  {value:8.2f} s")
    full = seconds["dbt full build (all days but one)"]
    incremental = seconds["dbt incremental build (+1 day)"]
    feast_s = seconds["feast get_historical_features"]
    floor_s = seconds["duckdb ASOF JOIN floor"]
    print("ratios (same run):")
    print(f"  incremental dbt build / full build        {incremental / full:6.2f}")
    print(f"  Feast point-in-time retrieval / ASOF floor {feast_s / floor_s:6.2f}")
    print(
        f"  floor parity: {len(compared)} features x {len(left):,} rows, "
        f"{mismatches} differing values; entity columns: {len(ENTITY_COLUMNS)}"
    )


if __name__ == "__main__":
    main()
