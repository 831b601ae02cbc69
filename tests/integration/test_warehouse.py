"""Real dbt builds of the warehouse on tiny hand-made raw data, where every expected number is known.

Build A loads 2024-03-01 .. 03-02 with one bad row per quarantine reason; build B adds 03-03 and
rewrites 03-02 (late data) incrementally; build C rebuilds B's raw data from scratch to prove the
incremental result equals a full rebuild. Failing builds run on copies of B's state dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankflow.data.contract import ContractError
from rankflow.features.exports import export_files, export_path
from rankflow.paths import StatePaths
from rankflow.warehouse import rebuilt
from rankflow.warehouse.build import (
    WarehouseBuildError,
    WarehouseResult,
    build_warehouse,
    write_raw,
)
from rankflow.warehouse.docs import generate_docs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AS_OF_A = datetime(2024, 3, 2, 18, 0)
AS_OF_B = datetime(2024, 3, 3, 20, 0)

USERS = pd.DataFrame(
    {
        "user_id": [1, 2, 3],
        "segment": ["casual", "power", "deal_seeker"],
        "age_bucket": ["18-24", None, "25-34"],
        "region": ["eu", "us", None],
        "signup_ts": pd.to_datetime(["2024-01-01 00:00:00"] * 3, utc=True),
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": [10, 11, 12],
        "category": ["books", "toys", "books"],
        "price": [5.0, 7.5, -1.0],  # item 12: impossible price
        "created_ts": pd.to_datetime(["2024-01-01 00:00:00"] * 3, utc=True),
    }
)

# (event_id, ts UTC, user_id, item_id, position, device, clicked)
DAY_1 = [
    ("a1", "2024-03-01 10:00:00", 1, 10, 1, "mobile", 1),
    ("a2", "2024-03-01 23:59:59", 1, 11, 2, "desktop", 0),  # last second before 03-02
    ("a3", "2024-03-01 12:00:00", 2, 10, 1, "tablet", 0),
    ("bad_pos", "2024-03-01 12:00:00", 1, 10, 0, "mobile", 0),  # invalid_position
    ("a1", "2024-03-01 13:00:00", 2, 11, 1, "mobile", 1),  # duplicate_event_id (later copy)
    ("no_user", "2024-03-01 14:00:00", None, 10, 1, "mobile", 0),  # null_key
    ("ghost_item", "2024-03-01 15:00:00", 2, 99, 1, "mobile", 0),  # unknown_item
]
DAY_2 = [
    ("b1", "2024-03-02 00:00:00", 1, 11, 1, "mobile", 1),  # exactly midnight: belongs to 03-02
    ("b2", "2024-03-02 09:00:00", 2, 10, 1, "mobile", 1),
    ("late_evening", "2024-03-02 20:00:00", 1, 10, 3, "mobile", 0),  # after AS_OF_A: future_ts
    ("cheap", "2024-03-02 10:00:00", 2, 12, 1, "mobile", 0),  # negative_price
]
DAY_2_LATE = [("b3", "2024-03-02 15:00:00", 2, 11, 2, "desktop", 0)]  # arrives with build B
DAY_3 = [
    ("c1", "2024-03-03 08:00:00", 3, 10, 1, "mobile", 1),
    ("c2", "2024-03-03 09:00:00", 1, 10, 4, "tablet", 0),
]

EXPORT_SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    "labelled_impressions": {
        "event_id": pa.string(),
        "event_timestamp": pa.timestamp("us", tz="UTC"),
        "event_date": pa.date32(),
        "user_id": pa.int64(),
        "item_id": pa.int64(),
        "category": pa.string(),
        "position": pa.int32(),
        "device": pa.string(),
        "hour_of_day": pa.int32(),
        "day_of_week": pa.int32(),
        "label": pa.int32(),
    },
    "user_attributes": {
        "user_id": pa.int64(),
        "user_segment": pa.string(),
        "user_age_bucket": pa.string(),
        "user_region": pa.string(),
        "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"),
    },
    "item_attributes": {
        "item_id": pa.int64(),
        "item_category": pa.string(),
        "item_price": pa.float64(),
        "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"),
    },
    "user_daily_features": {
        "user_id": pa.int64(),
        "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"),
        **{
            f"user_{m}_{w}": pa.int64()
            for m in ("impressions", "clicks")
            for w in ("1d", "7d", "28d")
        },
        "user_ctr_7d": pa.float64(),
        "user_ctr_28d": pa.float64(),
        "user_days_since_last_click": pa.float64(),
    },
    "item_daily_features": {
        "item_id": pa.int64(),
        "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"),
        **{
            f"item_{m}_{w}": pa.int64()
            for m in ("impressions", "clicks")
            for w in ("1d", "7d", "28d")
        },
        "item_ctr_7d": pa.float64(),
        "item_ctr_28d": pa.float64(),
    },
    "user_category_daily_features": {
        "user_id": pa.int64(),
        "category": pa.string(),
        "feature_ts": pa.timestamp("us", tz="UTC"),
        "created_ts": pa.timestamp("us", tz="UTC"),
        "uc_impressions_28d": pa.int64(),
        "uc_clicks_28d": pa.int64(),
        "uc_ctr_28d": pa.float64(),
    },
}


def impressions(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["event_id", "ts", "user_id", "item_id", "position", "device", "clicked"]
    )
    frame["request_id"] = "req-" + frame["event_id"]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["user_id"] = frame["user_id"].astype("Int64")  # nullable: one row lacks its key
    frame["item_id"] = frame["item_id"].astype("int64")
    frame["position"] = frame["position"].astype("int32")
    frame["clicked"] = frame["clicked"].astype("int8")
    return frame


def query(path: Path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the given paths (file or folder)."""
    digests = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def copy_state(src: StatePaths, dst_root: Path) -> StatePaths:
    """A private copy of a state dir's raw data, warehouse and exports (not dbt's target/)."""
    dst = StatePaths(dst_root)
    for rel in ("raw", "warehouse", "exports"):
        shutil.copytree(src.root / rel, dst.root / rel)
    return dst


# --- the three builds, once per module ---------------------------------------------------------


@pytest.fixture(scope="module")
def build_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[StatePaths, WarehouseResult]:
    paths = StatePaths(tmp_path_factory.mktemp("wh-a"))
    write_raw(paths.raw, USERS, ITEMS, impressions(DAY_1 + DAY_2))
    result = build_warehouse(paths, as_of=AS_OF_A)
    # keep a snapshot of A's tables: build B replaces this state's warehouse
    snapshot = paths.root / "snapshot-a.duckdb"
    shutil.copy2(paths.warehouse, snapshot)
    return paths, result


@pytest.fixture(scope="module")
def build_b(
    build_a: tuple[StatePaths, WarehouseResult],
) -> tuple[StatePaths, WarehouseResult, WarehouseResult]:
    paths, result_a = build_a
    # a new day arrives, and the previous day is rewritten with one late impression
    write_raw(paths.raw, USERS, ITEMS, impressions(DAY_2 + DAY_2_LATE + DAY_3))
    result_b = build_warehouse(paths, as_of=AS_OF_B)
    return paths, result_a, result_b


@pytest.fixture(scope="module")
def build_c(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[StatePaths, WarehouseResult]:
    paths_b = build_b[0]
    paths = StatePaths(tmp_path_factory.mktemp("wh-c"))
    shutil.copytree(paths_b.raw, paths.raw)
    return paths, build_warehouse(paths, as_of=AS_OF_B, full_refresh=True)


# --- build A: contents, exports, quarantine, time rule -----------------------------------------


def test_build_writes_every_export_with_the_exact_schema(
    build_a: tuple[StatePaths, WarehouseResult],
) -> None:
    paths, result = build_a
    assert set(result.exports) == set(EXPORT_SCHEMAS)
    for name, expected in EXPORT_SCHEMAS.items():
        assert result.exports[name] == export_path(paths, name)
        files = export_files(paths, name)
        assert files, name
        for file in files:  # per-day exports: one file per day, each with the whole schema
            schema = pq.read_schema(file)
            assert schema.names == list(expected), file
            for column, dtype in expected.items():
                assert schema.field(column).type == dtype, f"{file}:{column}"
    assert [f.name for f in export_files(paths, "labelled_impressions")] == [
        "2024-03-01.parquet",
        "2024-03-02.parquet",
    ]
    assert result.row_counts["export_labelled_impressions"] == 5
    assert result.run_summary.get("error", 0) == 0 and result.run_summary.get("fail", 0) == 0
    # nothing of the build is left behind next to the live files (the rebuilt-days record for
    # the next materialization is state, not scratch: rankflow.warehouse.rebuilt)
    assert sorted(
        p.name for p in paths.warehouse.parent.iterdir() if not p.name.endswith(".lock")
    ) == sorted(["rankflow.duckdb", rebuilt.MARKER])
    assert not any(p.name.startswith(".exports") for p in paths.root.iterdir())


def test_bad_rows_are_quarantined_with_their_reason(
    build_a: tuple[StatePaths, WarehouseResult],
) -> None:
    paths, result = build_a
    expected = {
        "duplicate_event_id": 1,
        "future_ts": 1,
        "invalid_position": 1,
        "negative_price": 1,
        "null_key": 1,
        "unknown_item": 1,
    }
    assert result.quarantine_counts == expected
    snapshot = paths.root / "snapshot-a.duckdb"
    quarantined = query(
        snapshot, "select reason, event_id, ts, user_id from quarantined_impressions"
    )
    by_reason = dict(zip(quarantined["reason"], quarantined["event_id"], strict=True))
    assert by_reason["invalid_position"] == "bad_pos"
    assert by_reason["future_ts"] == "late_evening"
    assert by_reason["unknown_item"] == "ghost_item"
    assert by_reason["negative_price"] == "cheap"
    assert by_reason["null_key"] == "no_user"
    # the later copy of a1 is the duplicate; the first (10:00, user 1) is the one that counts
    dup = quarantined[quarantined["reason"] == "duplicate_event_id"].iloc[0]
    assert dup["event_id"] == "a1" and dup["user_id"] == 2
    valid = query(snapshot, "select event_id, user_id from fct_labelled_impressions order by 1")
    assert valid["event_id"].tolist() == ["a1", "a2", "a3", "b1", "b2"]
    assert valid.set_index("event_id").loc["a1", "user_id"] == 1


def test_labelled_impressions_columns(build_a: tuple[StatePaths, WarehouseResult]) -> None:
    paths, _ = build_a
    frame = pd.read_parquet(paths.exports / "labelled_impressions").set_index("event_id")
    b1 = frame.loc["b1"]
    assert b1["event_timestamp"] == pd.Timestamp("2024-03-02 00:00:00", tz="UTC")
    assert str(b1["event_date"]) == "2024-03-02"
    assert (b1["hour_of_day"], b1["day_of_week"], b1["label"]) == (0, 6, 1)  # a Saturday
    assert frame.loc["a2", "category"] == "toys"
    assert frame.loc["a2", "hour_of_day"] == 23


def test_features_count_only_events_strictly_before_their_timestamp(
    build_a: tuple[StatePaths, WarehouseResult],
) -> None:
    paths, _ = build_a
    users = pd.read_parquet(paths.exports / "user_daily_features")
    users = users.set_index(["user_id", users["feature_ts"].dt.strftime("%m-%d")])
    # user 1, stamped 03-02: a1 (10:00) and a2 (23:59:59) of 03-01, not b1 at 03-02 00:00:00
    row = users.loc[(1, "03-02")]
    assert (row["user_impressions_1d"], row["user_clicks_1d"], row["user_impressions_28d"]) == (
        2,
        1,
        2,
    )
    assert row["user_days_since_last_click"] == pytest.approx(14 / 24)
    # stamped 03-03: b1 is now visible, one day old
    row = users.loc[(1, "03-03")]
    assert (row["user_impressions_1d"], row["user_impressions_7d"], row["user_clicks_7d"]) == (
        1,
        3,
        2,
    )
    assert row["user_days_since_last_click"] == pytest.approx(1.0)
    assert row["user_ctr_7d"] == pytest.approx((2 + 20 * 0.04) / (3 + 20))
    # user 2 never clicked before 03-02: recency is null
    assert pd.isna(users.loc[(2, "03-02"), "user_days_since_last_click"])
    # rows run from the day after the first impression to the day after the newest raw day
    assert sorted(users.index) == [(1, "03-02"), (1, "03-03"), (2, "03-02"), (2, "03-03")]
    assert (users.index.get_level_values(1) != "03-01").all()

    items = pd.read_parquet(paths.exports / "item_daily_features")
    item10 = items[(items["item_id"] == 10) & (items["feature_ts"].dt.day == 3)].iloc[0]
    assert (item10["item_impressions_1d"], item10["item_impressions_28d"]) == (1, 3)

    uc = pd.read_parquet(paths.exports / "user_category_daily_features")
    uc["day"] = uc["feature_ts"].dt.strftime("%m-%d")
    toys = uc[(uc["user_id"] == 1) & (uc["category"] == "toys")].set_index("day")
    assert toys.loc["03-02", "uc_impressions_28d"] == 1  # a2 only; b1 is at 03-02 00:00
    assert toys.loc["03-03", "uc_impressions_28d"] == 2
    assert toys.loc["03-03", "uc_ctr_28d"] == pytest.approx((1 + 0.8) / (2 + 20))


def test_no_duckdb_handle_stays_open(build_a: tuple[StatePaths, WarehouseResult]) -> None:
    paths, _ = build_a
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc")
    open_files = []
    for fd in fd_dir.iterdir():
        try:
            open_files.append(os.readlink(fd))
        except OSError:  # closed between listing and reading
            continue
    held = [f for f in open_files if f.startswith(str(paths.root)) and ".duckdb" in f]
    assert not held


# --- build B: incremental ----------------------------------------------------------------------


def test_incremental_build_adds_the_new_day_and_keeps_old_rows(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
) -> None:
    paths, result_a, result_b = build_b
    assert result_a.invocation_id and result_b.invocation_id != result_a.invocation_id
    loads = query(
        paths.warehouse,
        "select event_date::varchar as day, list(distinct _load_id) as ids, count(*) as n "
        "from fct_labelled_impressions group by 1 order by 1",
    ).set_index("day")
    # 03-01 is outside the 1-day lookback: its rows were not rewritten
    assert list(loads.loc["2024-03-01", "ids"]) == [result_a.invocation_id]
    # 03-02 (the lookback day, rewritten with a late row) and the new 03-03 were
    assert list(loads.loc["2024-03-02", "ids"]) == [result_b.invocation_id]
    assert list(loads.loc["2024-03-03", "ids"]) == [result_b.invocation_id]
    assert loads["n"].to_dict() == {"2024-03-01": 3, "2024-03-02": 4, "2024-03-03": 2}

    features = query(
        paths.warehouse,
        "select strftime(feature_ts, '%m-%d') as day, list(distinct _load_id) as ids "
        "from user_daily_features group by 1 order by 1",
    ).set_index("day")
    assert list(features.loc["03-02", "ids"]) == [result_a.invocation_id]
    assert list(features.loc["03-03", "ids"]) == [result_b.invocation_id]
    assert list(features.loc["03-04", "ids"]) == [result_b.invocation_id]

    # the rewritten day was picked up: user 2 stamped 03-03 sees b2 and the late b3
    users = pd.read_parquet(paths.exports / "user_daily_features")
    row = users[(users["user_id"] == 2) & (users["feature_ts"].dt.day == 3)].iloc[0]
    assert row["user_impressions_1d"] == 2
    # re-judged with the new as_of, the 20:00 impression of 03-02 is valid now
    assert "future_ts" not in result_b.quarantine_counts
    assert result_b.quarantine_counts["negative_price"] == 1
    assert result_b.row_counts["export_labelled_impressions"] == 9


def test_incremental_result_equals_a_full_rebuild(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
    build_c: tuple[StatePaths, WarehouseResult],
) -> None:
    paths_b, _, _ = build_b
    paths_c, result_c = build_c
    assert result_c.full_refresh
    for table, key in [
        ("fct_labelled_impressions", "event_id"),
        ("quarantined_impressions", "reason, event_date, event_id"),
        ("user_daily_features", "user_id, feature_ts"),
        ("item_daily_features", "item_id, feature_ts"),
        ("user_category_daily_features", "user_id, category, feature_ts"),
    ]:
        sql = f"select * exclude (_load_id, _loaded_at) from {table} order by {key}"
        if table == "quarantined_impressions":
            sql = (
                f"select * exclude (_load_id, _loaded_at, _source_file) from {table} order by {key}"
            )
        incremental, full = query(paths_b.warehouse, sql), query(paths_c.warehouse, sql)
        assert len(full) > 0, table
        pd.testing.assert_frame_equal(incremental, full, obj=table)


ATTRIBUTE_NODES = {
    f"model.rankflow.{name}"
    for name in (
        "stg_users",
        "stg_items",
        "dim_users",
        "dim_items",
        "export_user_attributes",
        "export_item_attributes",
    )
}


def test_an_incremental_build_leaves_the_attribute_branch_as_it_was(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
) -> None:
    paths, result_a, result_b = build_b
    assert not result_b.full_refresh
    run = json.loads((result_b.dbt_target_dir / "run_results.json").read_text())
    ran = {r["unique_id"] for r in run["results"]}
    assert "model.rankflow.fct_labelled_impressions" in ran
    # users/ and items/ are unchanged (else the build would be full): their branch is not rerun
    assert not ran & ATTRIBUTE_NODES
    assert not any(n.startswith("test.rankflow.source_") for n in ran)
    # ... but the tests joining the new rows to the kept dims still run
    assert any(n.startswith("test.rankflow.relationships_fct_labelled_impressions") for n in ran)
    # the attribute exports were carried over from build A, not rewritten
    loaded_a = query(
        paths.warehouse,
        f"select distinct _loaded_at from fct_labelled_impressions "
        f"where _load_id = '{result_a.invocation_id}'",
    )["_loaded_at"].tolist()
    for name in ("user_attributes", "item_attributes"):
        created = pd.read_parquet(paths.exports / f"{name}.parquet")["created_ts"]
        assert created.dt.tz_localize(None).unique().tolist() == loaded_a, name
    assert result_b.row_counts["export_user_attributes"] == len(USERS)


def test_a_missing_attribute_export_makes_the_build_full(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
    build_c: tuple[StatePaths, WarehouseResult],
) -> None:
    # build_c's own state (its tests ran above): the next build there would be incremental
    paths = build_c[0]
    (paths.exports / "item_attributes.parquet").unlink()
    result = build_warehouse(paths, as_of=AS_OF_B)
    assert result.full_refresh
    assert "live exports lack item_attributes.parquet" in result.plan
    rows = build_b[2].row_counts["export_item_attributes"]
    assert rows > 0 and len(pd.read_parquet(paths.exports / "item_attributes.parquet")) == rows


# --- failures leave the live state alone -------------------------------------------------------


def test_failing_dbt_test_raises_and_leaves_live_state_byte_identical(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult], tmp_path: Path
) -> None:
    paths = copy_state(build_b[0], tmp_path / "state")
    before = tree_digest(paths.warehouse, paths.exports)
    users = USERS.copy()
    users.loc[users["user_id"] == 3, "segment"] = None  # the contract says segment is not null
    users.to_parquet(paths.raw / "users" / "part-0.parquet", index=False)

    with pytest.raises(WarehouseBuildError) as caught:
        build_warehouse(paths, as_of=AS_OF_B)

    message = str(caught.value)
    assert "not_null_stg_users_segment" in message
    assert "column 'segment' of stg_users" in message
    failure = caught.value.failures[0]
    assert (failure.model, failure.column, failure.status) == ("stg_users", "segment", "fail")
    assert tree_digest(paths.warehouse, paths.exports) == before
    assert not (paths.warehouse.parent / ".build").exists()
    assert not (paths.root / ".exports-build").exists()


def test_corrupt_raw_file_raises_naming_the_file_and_changes_nothing(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult], tmp_path: Path
) -> None:
    paths = copy_state(build_b[0], tmp_path / "state")
    before = tree_digest(paths.warehouse, paths.exports)
    bad_day = paths.raw / "impressions" / "event_date=2024-03-04"
    bad_day.mkdir()
    (bad_day / "broken.parquet").write_bytes(b"this is not parquet")

    # the contract check runs first, on the files the build would load
    with pytest.raises(ContractError) as caught:
        build_warehouse(paths, as_of=AS_OF_B)

    message = str(caught.value)
    assert "raw/impressions/event_date=2024-03-04/broken.parquet: is not a readable" in message
    assert "\n" not in message
    assert tree_digest(paths.warehouse, paths.exports) == before


def test_missing_raw_folder_is_a_clear_error(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    (paths.raw / "users").mkdir(parents=True)
    with pytest.raises(WarehouseBuildError, match=r"lacks items/, impressions/"):
        build_warehouse(paths)
    assert not paths.warehouse.exists()


# --- docs --------------------------------------------------------------------------------------


def test_generate_docs(
    build_b: tuple[StatePaths, WarehouseResult, WarehouseResult],
) -> None:
    paths = build_b[0]
    before = tree_digest(paths.warehouse)
    docs = generate_docs(paths)
    assert (docs / "index.html").is_file()
    catalog = (docs / "catalog.json").read_text()
    assert "model.rankflow.user_daily_features" in catalog
    assert "user_days_since_last_click" in catalog
    assert tree_digest(paths.warehouse) == before
