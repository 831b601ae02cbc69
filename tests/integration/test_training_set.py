"""Training sets through the real Feast point-in-time join: leakage and the time split.

Exports are written with exactly the dbt export schema; the values identify the feature row a
given impression was joined to (``user_impressions_1d`` == the row's tag).
"""

from __future__ import annotations

import math
import shutil
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankflow.features.exports import PER_DAY_EXPORTS, export_files
from rankflow.features.store import ExportError, apply_feature_repo, export_path
from rankflow.features.training_set import (
    ENTITY_COLUMNS,
    SplitConfig,
    TrainingSet,
    TrainingSetError,
    build_training_set,
)
from rankflow.paths import StatePaths
from rankflow.settings import Settings
from tests.fixtures.exports import write_export

pytestmark = pytest.mark.integration

BUILT = datetime(2024, 3, 20, tzinfo=UTC)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, second, tzinfo=UTC)


def user_row(user_id: int, ts: datetime, tag: int) -> dict[str, Any]:
    """A user_daily_features row tagged ``tag`` in every count (0.01 * tag in the CTRs)."""
    return {
        "user_id": user_id,
        "feature_ts": ts,
        "created_ts": BUILT,
        **{f"user_{k}_{w}": tag for k in ("impressions", "clicks") for w in ("1d", "7d", "28d")},
        "user_ctr_7d": 0.01 * tag,
        "user_ctr_28d": 0.01 * tag,
        "user_days_since_last_click": float(tag),
    }


def impression(
    event_id: str, ts: datetime, user_id: int, label: int, item_id: int = 10, position: int = 1
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_timestamp": ts,
        "event_date": ts.date(),
        "user_id": user_id,
        "item_id": item_id,
        "category": "books",
        "position": position,
        "device": "mobile",
        "hour_of_day": ts.hour,
        "day_of_week": ts.isoweekday(),
        "label": label,
    }


# Five days, 2024-03-01 .. 03-05. User 1's rows are the leakage probes around e_noon (03-02 12:00).
IMPRESSIONS = [
    impression("e_day1", at(1, 8), user_id=2, label=0),
    impression("e_noon", at(2, 12), user_id=1, label=1),
    impression("e_exact", at(2, 12, 0, 1), user_id=1, label=0),
    impression("e_late", at(2, 23, 59, 59), user_id=1, label=0),
    impression("e_before_signup", at(2, 10), user_id=3, label=0),
    impression("e_midnight", at(3), user_id=1, label=1),
    impression("e_stale", at(4, 10), user_id=1, label=0, position=3),
    # Same timestamp, written out of id order: the builder orders ties by event_id.
    impression("e_day5_b", at(5, 9), user_id=2, label=1),
    impression("e_day5_a", at(5, 9), user_id=2, label=0, item_id=11),
]

USER_ROWS = [
    user_row(1, at(2), tag=1),  # before e_noon: the row e_noon must get
    user_row(1, at(2, 12, 0, 1), tag=50),  # stamped 1 s after e_noon: e_noon must not see it
    user_row(1, at(3), tag=3),  # a day later
    user_row(2, at(4), tag=7),
    user_row(2, at(5), tag=8),
]


@pytest.fixture
def paths(private_home: StatePaths) -> StatePaths:
    state = private_home
    write_export(state, "labelled_impressions", IMPRESSIONS)
    write_export(
        state,
        "user_attributes",
        [
            {
                "user_id": 1,
                "user_segment": "power",
                "user_age_bucket": "25-34",
                "user_region": "eu",
                "feature_ts": at(1),
                "created_ts": BUILT,
            },
            {
                "user_id": 2,
                "user_segment": "casual",
                "user_age_bucket": None,
                "user_region": "us",
                "feature_ts": at(1),
                "created_ts": BUILT,
            },
            # Signs up after its (impossible, but probing) impression at 03-02 10:00.
            {
                "user_id": 3,
                "user_segment": "deal_seeker",
                "user_age_bucket": "18-24",
                "user_region": "us",
                "feature_ts": at(3),
                "created_ts": BUILT,
            },
        ],
    )
    write_export(
        state,
        "item_attributes",
        [
            {
                "item_id": 10,
                "item_category": "books",
                "item_price": 9.5,
                "feature_ts": datetime(2023, 1, 1, tzinfo=UTC),
                "created_ts": BUILT,
            },
            {
                "item_id": 11,
                "item_category": "books",
                "item_price": 20.0,
                "feature_ts": datetime(2023, 1, 1, tzinfo=UTC),
                "created_ts": BUILT,
            },
        ],
    )
    write_export(state, "user_daily_features", USER_ROWS)
    write_export(state, "item_daily_features", [])
    write_export(
        state,
        "user_category_daily_features",
        [
            {
                "user_id": 1,
                "category": "books",
                "feature_ts": at(2),
                "created_ts": BUILT,
                "uc_impressions_28d": 4,
                "uc_clicks_28d": 1,
                "uc_ctr_28d": 0.02,
            },
        ],
    )
    apply_feature_repo(on(state))
    return state


SPLIT = SplitConfig(valid_days=1, test_days=1)


def on(paths: StatePaths) -> Settings:
    """The embedded settings of a state dir (SQLite online store, no server)."""
    return Settings(home=paths.root)


def build(paths: StatePaths, split: SplitConfig) -> TrainingSet:
    return build_training_set(on(paths), split, feature_service="ctr_ranker_v1")


def all_rows(training_set: Any) -> pd.DataFrame:
    return pd.concat([training_set.train, training_set.valid, training_set.test]).set_index(
        "event_id"
    )


def test_point_in_time_join_never_sees_a_later_feature_row(paths: StatePaths) -> None:
    rows = all_rows(build(paths, SPLIT))

    # The row stamped 1 s after the impression is invisible to it; the earlier one is used.
    assert rows.loc["e_noon", "user_impressions_1d"] == 1
    assert rows.loc["e_noon", "user_ctr_28d"] == pytest.approx(0.01)
    # A row stamped exactly at the impression time is allowed (stamped <= t) ...
    assert rows.loc["e_exact", "user_impressions_1d"] == 50
    # ... and stays the newest one until the next is stamped.
    assert rows.loc["e_late", "user_impressions_1d"] == 50
    assert rows.loc["e_midnight", "user_impressions_1d"] == 3
    # Past the one-day TTL the last row has expired: null, not a stale value.
    assert math.isnan(rows.loc["e_stale", "user_impressions_1d"])
    # No row at or before the impression: null, never the first row after it.
    assert math.isnan(rows.loc["e_day1", "user_impressions_1d"])
    # Attributes stamped after the impression (signup at 03-03) do not leak backwards either.
    assert rows.loc["e_before_signup", "user_segment"] is None
    assert rows.loc["e_noon", "user_segment"] == "power"
    # On-demand features are computed from the joined values and the request context.
    assert rows.loc["e_noon", "uc_ctr_lift"] == pytest.approx(0.02 / 0.01)
    assert rows.loc["e_exact", "uc_ctr_lift"] == pytest.approx(0.02 / 0.50)
    assert rows.loc["e_stale", "log_position"] == pytest.approx(math.log(4))
    assert rows.loc["e_noon", "hour_cos"] == pytest.approx(-1.0)


def test_per_day_files_join_exactly_like_one_file(paths: StatePaths) -> None:
    """Feast reads a per-day export through one glob source: splitting the rows into one file
    per day must not change a single joined value (against the same rows in one file each)."""
    per_day = all_rows(build(paths, SPLIT))
    assert len(export_files(paths, "user_daily_features")) > 1  # the rows really are split
    for name in PER_DAY_EXPORTS:
        folder = export_path(paths, name)
        table = pq.read_table(folder)
        shutil.rmtree(folder)
        folder.mkdir()
        pq.write_table(table, folder / "all.parquet")
    apply_feature_repo(on(paths))

    one_file = all_rows(build(paths, SPLIT))

    pd.testing.assert_frame_equal(per_day, one_file)


def test_split_is_by_day_ordered_and_disjoint(paths: StatePaths) -> None:
    training_set = build(paths, SPLIT)
    train, valid, test = training_set.train, training_set.valid, training_set.test

    days = {
        name: set(frame["event_timestamp"].dt.date)
        for name, frame in (("train", train), ("valid", valid), ("test", test))
    }
    assert days == {
        "train": {date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)},
        "valid": {date(2024, 3, 4)},
        "test": {date(2024, 3, 5)},
    }
    assert train["event_timestamp"].max() < valid["event_timestamp"].min()
    assert valid["event_timestamp"].max() < test["event_timestamp"].min()
    ids = [set(frame["event_id"]) for frame in (train, valid, test)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert set().union(*ids) == {row["event_id"] for row in IMPRESSIONS}
    # Sorted by (event_timestamp, event_id) within each split, ties included.
    for frame in (train, valid, test):
        assert frame.equals(
            frame.sort_values(["event_timestamp", "event_id"]).reset_index(drop=True)
        )
    assert list(test["event_id"]) == ["e_day5_a", "e_day5_b"]

    # Columns: the entity/label columns, then the service's features; one dtype per feature.
    assert list(train.columns) == [*ENTITY_COLUMNS, *training_set.feature_names]
    assert len(training_set.feature_names) == 28
    for name, value_type in training_set.feature_types.items():
        expected = "object" if value_type == "String" else "float64"
        assert {str(frame[name].dtype) for frame in (train, valid, test)} == {expected}, name
    assert str(train["event_timestamp"].dt.tz) == "UTC"

    described = training_set.describe()
    assert described["splits"]["train"]["rows"] == 6
    assert described["splits"]["train"]["positive_rate"] == pytest.approx(2 / 6)
    assert described["splits"]["test"] == {
        "rows": 2,
        "columns": train.shape[1],
        "positive_rate": 0.5,
        "start": "2024-03-05",
        "end": "2024-03-05",
    }
    assert described["window"] == {"start": "2024-03-01", "end": "2024-03-05"}

    # Deterministic: a second build is identical, row for row.
    again = build(paths, SPLIT)
    for name in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(again.split(name), training_set.split(name))


def test_window_bounds_restrict_the_rows(paths: StatePaths) -> None:
    training_set = build(paths, SplitConfig(valid_days=1, test_days=1, start_date=date(2024, 3, 2)))
    assert "e_day1" not in set(training_set.train["event_id"])
    assert training_set.train["event_timestamp"].min() == pd.Timestamp(at(2, 10))


def test_empty_split_is_a_clear_error(paths: StatePaths) -> None:
    with pytest.raises(TrainingSetError, match=r"train split empty"):
        build(paths, SplitConfig(valid_days=3, test_days=3))
    with pytest.raises(TrainingSetError, match=r"the test split \(2024-03-06\.\.2024-03-06\)"):
        build(paths, SplitConfig(valid_days=1, test_days=1, end_date=date(2024, 3, 6)))
    with pytest.raises(TrainingSetError, match=r"no impressions in the window"):
        build(
            paths,
            SplitConfig(start_date=date(2024, 4, 1), end_date=date(2024, 4, 30)),
        )


def test_duplicate_event_ids_are_rejected_naming_the_file(paths: StatePaths) -> None:
    write_export(paths, "labelled_impressions", [*IMPRESSIONS, IMPRESSIONS[0]])
    with pytest.raises(TrainingSetError, match=r"labelled_impressions: column 'event_id'"):
        build(paths, SPLIT)


def test_naive_utc_timestamps_are_read_as_utc(paths: StatePaths) -> None:
    for path in export_files(paths, "labelled_impressions"):
        table = pq.read_table(path)
        naive = table["event_timestamp"].cast(pa.timestamp("us"))
        pq.write_table(table.set_column(1, "event_timestamp", naive), path)

    rows = all_rows(build(paths, SPLIT))
    assert rows.loc["e_noon", "event_timestamp"] == pd.Timestamp(at(2, 12))
    assert rows.loc["e_noon", "user_impressions_1d"] == 1
    assert rows.loc["e_exact", "user_impressions_1d"] == 50


def test_missing_export_names_the_file(paths: StatePaths) -> None:
    shutil.rmtree(export_path(paths, "labelled_impressions"))
    with pytest.raises(ExportError, match=r"labelled_impressions: export"):
        build(paths, SPLIT)


def test_day_boundary_is_utc(paths: StatePaths) -> None:
    # 23:59:59 UTC on 03-04 belongs to 03-04 (valid), even though it is 03-05 in UTC+1.
    write_export(
        paths,
        "labelled_impressions",
        [*IMPRESSIONS, impression("e_valid_edge", at(4, 23, 59, 59), user_id=2, label=0)],
    )
    training_set = build(paths, SPLIT)
    assert "e_valid_edge" in set(training_set.valid["event_id"])
    assert training_set.valid["event_timestamp"].max() < at(5)
    assert training_set.split_windows["valid"] == (date(2024, 3, 4), date(2024, 3, 4))
