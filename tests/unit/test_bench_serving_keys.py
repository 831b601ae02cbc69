"""The serving benchmark's keys and checks (bench/serving_keys.py): ids drawn from what the
online store holds, and a stop when the requests would time the missing-entity path."""

from __future__ import annotations

import importlib.util
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "serving_keys.py"
_spec = importlib.util.spec_from_file_location("serving_keys", _PATH)
assert _spec is not None and _spec.loader is not None
serving_keys = importlib.util.module_from_spec(_spec)
sys.modules["serving_keys"] = serving_keys  # dataclasses look their module up there
_spec.loader.exec_module(serving_keys)

AS_OF = datetime(2026, 12, 1, tzinfo=UTC)
BEFORE = AS_OF - timedelta(days=3)


def _exports() -> dict[str, pd.DataFrame]:
    """Users 1_000_001-1_000_003 and items 50_001-50_005, as a simulator numbers them."""
    return {
        "user_attributes": pd.DataFrame({"user_id": [1_000_001, 1_000_002, 1_000_003]}),
        "item_attributes": pd.DataFrame(
            {
                "item_id": [50_001, 50_002, 50_003, 50_004, 50_005],
                "item_category": ["books", "books", "games", "games", None],
            }
        ),
        # 1_000_003 was last active three days ago: the store's row is outside the TTL
        "user_daily_features": pd.DataFrame(
            {"user_id": [1_000_001, 1_000_002, 1_000_003], "feature_ts": [AS_OF, AS_OF, BEFORE]}
        ),
        # 50_004's newest row is old
        "item_daily_features": pd.DataFrame(
            {
                "item_id": [50_001, 50_002, 50_003, 50_004, 50_005],
                "feature_ts": [AS_OF, AS_OF, AS_OF, BEFORE, AS_OF],
            }
        ),
        "user_category_daily_features": pd.DataFrame(
            {
                "user_id": [1_000_001, 1_000_001, 1_000_002, 1_000_002],
                "category": ["books", "games", "games", "books"],
                "feature_ts": [AS_OF, AS_OF, AS_OF, BEFORE],
            }
        ),
    }


def test_stored_keys_are_the_entities_with_a_fresh_row_of_every_view() -> None:
    keys = serving_keys.stored_keys(_exports(), AS_OF)
    assert keys.users.tolist() == [1_000_001, 1_000_002]
    assert keys.item_category == {50_001: "books", 50_002: "books", 50_003: "games"}
    assert keys.user_categories == {1_000_001: ["books", "games"], 1_000_002: ["games"]}


def test_bodies_draw_stored_ids_of_the_users_categories_seeded() -> None:
    keys = serving_keys.stored_keys(_exports(), AS_OF)
    when = (AS_OF + timedelta(hours=18)).isoformat()
    bodies = serving_keys.draw_bodies(np.random.default_rng(0), keys, 1, 200, when)
    pairs = {(b["user_id"], i) for b in bodies for i in b["item_ids"]}
    assert pairs == {(1_000_001, 50_001), (1_000_001, 50_002), (1_000_001, 50_003)} | {
        (1_000_002, 50_003)
    }
    assert {b["time"] for b in bodies} == {when}
    again = serving_keys.draw_bodies(np.random.default_rng(0), keys, 1, 200, when)
    assert again == bodies
    # two candidates: only 1_000_001 has two items in its categories; drawn without repeats
    pairs_of_two = serving_keys.draw_bodies(np.random.default_rng(1), keys, 2, 20, when)
    assert {b["user_id"] for b in pairs_of_two} == {1_000_001}
    assert all(len(set(b["item_ids"])) == 2 for b in pairs_of_two)
    with pytest.raises(serving_keys.BenchKeysError, match="4 items"):
        serving_keys.draw_bodies(np.random.default_rng(0), keys, 4, 1, when)


def test_an_export_without_a_row_at_the_as_of_time_is_named() -> None:
    exports = _exports()
    exports["item_daily_features"]["feature_ts"] = BEFORE
    with pytest.raises(serving_keys.BenchKeysError, match="item_daily_features"):
        serving_keys.stored_keys(exports, AS_OF)


def test_found_rates_per_view_count_stored_nulls_as_found() -> None:
    found, null, not_found, stale = 1, 2, 3, 4
    views = {"user_segment": "user_attributes", "uc_ctr_28d": "user_category_affinity"}
    requests = [
        {"user_segment": [found, found], "uc_ctr_28d": [found, not_found], "ctr_x": [found] * 2},
        {"user_segment": [null, found], "uc_ctr_28d": [stale, not_found]},
    ]
    rates = serving_keys.found_rates(requests, views)
    assert rates == {
        "user_attributes": {"user_segment": 1.0},
        "user_category_affinity": {"uc_ctr_28d": 0.25},
    }


def test_a_view_found_sixty_percent_of_the_time_stops_the_bench_naming_it() -> None:
    rates = {
        "user_attributes": {"user_segment": 1.0, "user_region": 0.99},
        "item_daily_stats": {"item_ctr_7d": 0.6, "item_ctr_28d": 0.6},
    }
    with pytest.raises(
        serving_keys.BenchKeysError,
        match=re.escape("item_daily_stats: item_ctr_28d 60.0%, item_ctr_7d 60.0%"),
    ):
        serving_keys.check_found_rates(rates)
    serving_keys.check_found_rates({"user_attributes": {"user_segment": 0.95}})


def test_equal_scores_across_candidates_stop_the_bench() -> None:
    serving_keys.check_scores_differ([[0.1, 0.2], [0.3]])
    with pytest.raises(serving_keys.BenchKeysError, match="1 of 2 requests"):
        serving_keys.check_scores_differ([[0.1, 0.2], [0.3, 0.3]])
    with pytest.raises(serving_keys.BenchKeysError, match="every score"):
        serving_keys.check_scores_differ([[0.4], [0.4]])


def test_keys_are_read_from_a_states_exports_and_a_missing_day_is_named(tmp_path: Path) -> None:
    from rankflow.paths import StatePaths

    paths = StatePaths(tmp_path)
    for name, frame in _exports().items():
        if "feature_ts" in frame.columns:
            folder = paths.exports / name
            folder.mkdir(parents=True)
            for day, rows in frame.groupby(frame["feature_ts"].dt.date):
                rows.to_parquet(folder / f"{day.isoformat()}.parquet")
        else:
            paths.exports.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(paths.exports / f"{name}.parquet")
    keys = serving_keys.read_stored_keys(paths, AS_OF)
    assert keys.users.tolist() == [1_000_001, 1_000_002]
    with pytest.raises(serving_keys.BenchKeysError, match=r"user_daily_features.*2026-12-02"):
        serving_keys.read_stored_keys(paths, AS_OF + timedelta(days=1))
