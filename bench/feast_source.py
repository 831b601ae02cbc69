"""Real data for ``bench/bench_models.py``: the simulator -> dbt -> Feast training set.

    .state/venv/bin/python bench/bench_models.py --source feast_source:load --rows 1000000

Runs the main job's stages (simulate with ``rows`` impressions and ``seed``, dbt build, feast
apply + materialize, point-in-time training set) in ``$RANKFLOW_HOME`` (default
``.state/bench/models``) and joins the simulator's true click probabilities for oracle metrics.
A state dir already built for the same rows and seed is reused. The simulation ends on
``END_DATE``, not on the default "today", so that state and the figures measured on it mean the
same data on any day.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The default `simulation.end_date: null` resolves to the day the data is simulated: a cached
# state would then silently stand for an earlier day's data, and a rebuild on another day would
# change every figure. The model figures of docs/benchmarks.md of 2026-12-01 and 2026-12-02 are on
# the simulation that ends here.
END_DATE = date(2026, 12, 1)


def state_paths():  # -> StatePaths
    """``$RANKFLOW_HOME`` if set, else ``.state/bench/models`` (not the main job's ``.state``).

    The bench's default goes in below the environment (the config-file layer of
    :meth:`Settings.resolve`), so this process's environment is read, never changed."""
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings

    settings = Settings.resolve(file={"home": REPO / ".state" / "bench" / "models"})
    settings.home.mkdir(parents=True, exist_ok=True)
    return StatePaths(settings.home)


def load(rows: int, seed: int) -> SimpleNamespace:
    from rankflow.config import load_config
    from rankflow.features.store import refresh_online_store
    from rankflow.features.training_set import build_training_set
    from rankflow.sim.simulate import simulate
    from rankflow.warehouse.build import build_warehouse

    # The population scales with the rows, so every size keeps the defaults' density (about
    # 100 impressions per user alive on a day and 500 per item; 1M rows = the defaults).
    config = load_config(
        overrides={
            "simulation.n_impressions": rows,
            "simulation.seed": seed or 7,
            "simulation.end_date": END_DATE.isoformat(),
            "simulation.n_users": max(100, rows // 100),
            "simulation.n_items": max(50, rows // 500),
        }
    )
    paths = state_paths()
    marker = paths.root / "bench-source.json"
    wanted = {"rows": rows, "seed": seed, "simulation": config.simulation.model_dump(mode="json")}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        raw_dir = config.resolved_raw_dir(paths)
        simulate(config.simulation, raw_dir, paths.truth)
        build_warehouse(
            paths, full_refresh=True, vars=config.warehouse.model_dump(), raw_dir=raw_dir
        )
        refresh_online_store(paths)
        marker.write_text(json.dumps(wanted))
    training_set = build_training_set(paths, config.training_set)
    truth = pd.read_parquet(paths.truth / "impressions", columns=["event_id", "p_click"])
    return SimpleNamespace(
        train=training_set.train,
        valid=training_set.valid,
        test=training_set.test,
        schema=dict(training_set.feature_types),
        truth=truth.set_index("event_id")["p_click"],
    )
