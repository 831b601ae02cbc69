"""Feast feature repo against real parquet exports: apply, materialize, online reads.

Each test writes a handful of rows with exactly the dbt export schema into its own
$RANKFLOW_HOME/exports/, so every expected value below is known by construction.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankflow.features.exports import export_files, source_path
from rankflow.features.store import (
    FEATURE_REPO,
    ExportError,
    FeatureStoreError,
    apply_feature_repo,
    coerce_features,
    export_path,
    exports_as_of,
    feature_service_schema,
    materialize_incremental,
    online_features,
    open_store,
    repo_config,
)
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.settings import Settings
from tests.fixtures.exports import write_export

pytestmark = pytest.mark.integration

SERVICE = "ctr_ranker_v1"
BUILT = datetime(2024, 3, 10, tzinfo=UTC)  # created_ts: when "dbt" built the rows
DAY1 = datetime(2024, 3, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY1 + timedelta(days=2)

EXPECTED_SCHEMA = {
    "user_segment": "String",
    "user_age_bucket": "String",
    "user_region": "String",
    "item_price": "Float64",
    **{f"user_{k}_{w}": "Int64" for k in ("impressions", "clicks") for w in ("1d", "7d", "28d")},
    "user_ctr_7d": "Float64",
    "user_ctr_28d": "Float64",
    "user_days_since_last_click": "Float64",
    **{f"item_{k}_{w}": "Int64" for k in ("impressions", "clicks") for w in ("1d", "7d", "28d")},
    "item_ctr_7d": "Float64",
    "item_ctr_28d": "Float64",
    "uc_impressions_28d": "Int64",
    "uc_clicks_28d": "Int64",
    "uc_ctr_28d": "Float64",
    "log_position": "Float64",
    "hour_sin": "Float64",
    "hour_cos": "Float64",
    "uc_ctr_lift": "Float64",
}


def user_day(user_id: int, ts: datetime, n: int, ctr_28d: float | None = None) -> dict[str, Any]:
    """A user_daily_features row whose values all derive from ``n`` (so a row is recognizable)."""
    return {
        "user_id": user_id,
        "feature_ts": ts,
        "created_ts": BUILT,
        "user_impressions_1d": n,
        "user_impressions_7d": 7 * n,
        "user_impressions_28d": 28 * n,
        "user_clicks_1d": 0,
        "user_clicks_7d": n,
        "user_clicks_28d": 2 * n,
        "user_ctr_7d": 0.01 * n,
        "user_ctr_28d": 0.02 * n if ctr_28d is None else ctr_28d,
        "user_days_since_last_click": None if n == 0 else float(n),
    }


def item_day(item_id: int, ts: datetime, n: int) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "feature_ts": ts,
        "created_ts": BUILT,
        **{f"item_impressions_{w}": n * k for w, k in (("1d", 1), ("7d", 7), ("28d", 28))},
        **{f"item_clicks_{w}": n * k // 10 for w, k in (("1d", 1), ("7d", 7), ("28d", 28))},
        "item_ctr_7d": 0.03 * n,
        "item_ctr_28d": 0.04 * n,
    }


def uc_day(user_id: int, category: str, ts: datetime, n: int, ctr: float) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "category": category,
        "feature_ts": ts,
        "created_ts": BUILT,
        "uc_impressions_28d": n,
        "uc_clicks_28d": n // 2,
        "uc_ctr_28d": ctr,
    }


def write_feature_exports(paths: StatePaths) -> None:
    """Users 1-3, items 10-11; daily rows on DAY1..DAY3 (DAY3 rows are 'after' the first end)."""
    write_export(
        paths,
        "user_attributes",
        [
            {
                "user_id": 1,
                "user_segment": "power",
                "user_age_bucket": "25-34",
                "user_region": "eu",
                "feature_ts": datetime(2023, 1, 5, tzinfo=UTC),
                "created_ts": BUILT,
            },
            {
                "user_id": 2,
                "user_segment": "casual",
                "user_age_bucket": None,
                "user_region": None,
                "feature_ts": datetime(2023, 6, 1, tzinfo=UTC),
                "created_ts": BUILT,
            },
            {
                "user_id": 3,
                "user_segment": "deal_seeker",
                "user_age_bucket": "18-24",
                "user_region": "us",
                "feature_ts": datetime(2024, 2, 28, tzinfo=UTC),
                "created_ts": BUILT,
            },
        ],
    )
    write_export(
        paths,
        "item_attributes",
        [
            {
                "item_id": 10,
                "item_category": "books",
                "item_price": 12.5,
                "feature_ts": datetime(2022, 1, 1, tzinfo=UTC),
                "created_ts": BUILT,
            },
            {
                "item_id": 11,
                "item_category": "games",
                "item_price": 60.0,
                "feature_ts": datetime(2022, 1, 1, tzinfo=UTC),
                "created_ts": BUILT,
            },
        ],
    )
    write_export(
        paths,
        "user_daily_features",
        [
            user_day(1, DAY1, 1),
            user_day(1, DAY2, 2),
            user_day(1, DAY3, 3),
            user_day(2, DAY1, 5),
            user_day(2, DAY2, 0, ctr_28d=0.0),  # a zero CTR: the lift must be null, not inf
        ],
    )
    write_export(
        paths,
        "item_daily_features",
        [
            item_day(10, DAY1, 1),
            item_day(10, DAY2, 2),
            item_day(10, DAY3, 3),
            item_day(11, DAY2, 4),
        ],
    )
    write_export(
        paths,
        "user_category_daily_features",
        [
            uc_day(1, "books", DAY1, 4, 0.05),
            uc_day(1, "books", DAY2, 6, 0.08),
            uc_day(1, "books", DAY3, 9, 0.5),
            uc_day(2, "games", DAY2, 3, 0.07),
        ],
    )


@pytest.fixture
def paths(private_home: StatePaths) -> StatePaths:
    write_feature_exports(private_home)
    return private_home


def at(paths: StatePaths) -> Settings:
    """The embedded settings of a state dir (SQLite online store, no server)."""
    return Settings(home=paths.root)


def request_rows() -> list[dict[str, Any]]:
    return [
        {
            "user_id": 1,
            "item_id": 10,
            "category": "books",
            "position": 1,
            "device": "mobile",
            "hour_of_day": 6,
        },
        {
            "user_id": 2,
            "item_id": 11,
            "category": "games",
            "position": 3,
            "device": "desktop",
            "hour_of_day": 0,
        },
        {
            "user_id": 3,
            "item_id": 11,
            "category": "games",
            "position": 2,
            "device": "tablet",
            "hour_of_day": 18,
        },
    ]


def test_apply_registers_the_repo_under_the_state_dir(paths: StatePaths) -> None:
    cwd_before, sys_path_before, environ_before = Path.cwd(), list(sys.path), dict(os.environ)
    summary = apply_feature_repo(at(paths))

    assert summary.project == "rankflow"
    assert summary.entities == ["category", "item", "user"]
    assert summary.feature_views == [
        "item_attributes",
        "item_daily_stats",
        "user_attributes",
        "user_category_affinity",
        "user_daily_stats",
    ]
    assert summary.on_demand_feature_views == ["request_features"]
    assert summary.feature_services == ["ctr_ranker_v1"]
    assert Path(summary.registry) == paths.feast / "registry.db"
    assert (paths.feast / "registry.db").is_file()
    # The sources point at this state dir's exports, not at whatever was applied before.
    assert set(summary.sources.values()) == {
        source_path(paths, name)
        for name in (
            "user_attributes",
            "item_attributes",
            "user_daily_features",
            "item_daily_features",
            "user_category_daily_features",
        )
    }
    # The apply leaves the process as it found it: no cwd, sys.path or environment change, and
    # the definitions come from the package, not from top-level modules of the repo folder.
    assert Path.cwd() == cwd_before
    assert sys.path == sys_path_before
    # (Feast's own feast.metrics sets PROMETHEUS_MULTIPROC[ESS]_DIR when first imported.)
    changed = {
        k for k in {*os.environ, *environ_before} if os.environ.get(k) != environ_before.get(k)
    }
    assert changed <= {"PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR"}
    assert "data_sources" not in sys.modules

    with open_store(at(paths)) as store:
        schema = feature_service_schema(store, SERVICE)
    assert schema == EXPECTED_SCHEMA
    assert list(schema) == list(EXPECTED_SCHEMA)  # the service's order
    assert "item_category" not in schema


def test_apply_rejects_a_bad_export_naming_file_and_column(paths: StatePaths) -> None:
    path = export_path(paths, "item_attributes")
    table = pq.read_table(path).drop_columns(["item_price"])
    pq.write_table(table, path)
    with pytest.raises(
        ExportError, match=r"item_attributes\.parquet: column 'item_price' is missing"
    ):
        apply_feature_repo(at(paths))


def test_nanosecond_timestamps_are_rejected_before_feast_fails_on_them(paths: StatePaths) -> None:
    # DuckDB cannot CAST TIMESTAMPTZ_NS -> TIMESTAMP, which Feast's materialization does;
    # pandas writes tz-aware datetimes in ns unless told otherwise.
    day_file = export_files(paths, "user_daily_features")[-1]  # one day's file of several
    frame = pq.read_table(day_file).to_pandas()
    frame["feature_ts"] = frame["feature_ts"].astype("datetime64[ns, UTC]")
    frame.to_parquet(day_file)
    with pytest.raises(ExportError, match=rf"{day_file.name}: column 'feature_ts'.*microseconds"):
        apply_feature_repo(at(paths))


def test_materialize_loads_the_latest_values_as_of_end(paths: StatePaths) -> None:
    apply_feature_repo(at(paths))

    summary = materialize_incremental(at(paths), DAY2)

    assert {name: view.mode for name, view in summary.views.items()} == dict.fromkeys(
        summary.views, "initial"
    )
    # First load: end - TTL for the daily views (not wall clock - TTL), all history without TTL.
    assert summary.views["user_daily_stats"].start == DAY1
    assert summary.views["user_attributes"].start == datetime(1970, 1, 1, tzinfo=UTC)

    online = online_features(at(paths), request_rows(), feature_service=SERVICE).set_index(
        "user_id"
    )
    # User 1: the DAY2 row (n=2), not DAY1's and not DAY3's, which is after `end`.
    assert online.loc[1, "user_impressions_1d"] == 2
    assert online.loc[1, "user_ctr_28d"] == pytest.approx(0.04)
    assert online.loc[1, "uc_ctr_28d"] == pytest.approx(0.08)
    assert online.loc[1, "uc_ctr_lift"] == pytest.approx(0.08 / 0.04)
    assert online.loc[1, "item_impressions_1d"] == 2
    assert online.loc[1, "user_segment"] == "power"
    assert online.loc[1, "item_price"] == 12.5
    assert online.loc[1, "log_position"] == pytest.approx(math.log(2))
    assert online.loc[1, "hour_sin"] == pytest.approx(1.0)
    # User 2: zero user CTR -> null lift; null attributes stay null.
    assert online.loc[2, "user_impressions_1d"] == 0
    assert math.isnan(online.loc[2, "uc_ctr_lift"])
    assert online.loc[2, "user_age_bucket"] is None
    assert math.isnan(online.loc[2, "user_days_since_last_click"])
    # User 3 has attributes but no activity yet: stats are null, attributes are there.
    assert online.loc[3, "user_segment"] == "deal_seeker"
    assert math.isnan(online.loc[3, "user_impressions_28d"])
    assert math.isnan(online.loc[3, "uc_ctr_lift"])
    assert online.loc[3, "hour_cos"] == pytest.approx(0.0, abs=1e-12)

    later = materialize_incremental(at(paths), DAY3)
    assert later.views["user_daily_stats"].mode == "incremental"
    assert later.views["user_daily_stats"].start == DAY2
    online = online_features(at(paths), request_rows(), feature_service=SERVICE).set_index(
        "user_id"
    )
    assert online.loc[1, "user_impressions_1d"] == 3
    assert online.loc[1, "uc_ctr_lift"] == pytest.approx(0.5 / 0.06)

    again = materialize_incremental(at(paths), DAY3)
    assert {view.mode for view in again.views.values()} == {"up_to_date"}
    # No call keeps the SQLite online store open (one writer at a time).
    assert open_files_under(paths.feast) == []


def open_files_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to list open files")
    targets = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            targets.append(os.readlink(fd))
    return [t for t in targets if t.startswith(str(folder))]


def test_reapply_keeps_the_incremental_start(paths: StatePaths) -> None:
    """feast-dev/feast#2905: `feast apply` after a materialization once reset the next
    materialize-incremental's start. We rely on it not doing so in Feast 0.67 (our apply runs
    Feast's CLI apply path), so pin it: the intervals survive, the next run starts at DAY2."""
    apply_feature_repo(at(paths))
    materialize_incremental(at(paths), DAY2)

    apply_feature_repo(at(paths))
    with open_store(at(paths)) as store:
        ends = {v.name: v.most_recent_end_time for v in store.list_feature_views()}
    assert set(ends.values()) == {DAY2}

    later = materialize_incremental(at(paths), DAY3)
    assert {v.mode for v in later.views.values()} == {"incremental"}
    assert {v.start for v in later.views.values()} == {DAY2}
    with open_store(at(paths)) as store:
        daily = store.get_feature_view("user_daily_stats")
    assert [tuple(i) for i in daily.materialization_intervals] == [(DAY1, DAY2), (DAY2, DAY3)]


def test_a_copied_state_dir_reads_no_exports_of_the_original(
    paths: StatePaths, tmp_path: Path
) -> None:
    """The registry keeps each source's absolute path: a copy of the state dir must not read
    the original's exports. Its offline reads fail naming the view and the path, until the
    feature repo is re-applied for the copy; the original is untouched."""
    apply_feature_repo(at(paths))
    materialize_incremental(at(paths), DAY2)
    copy = StatePaths(tmp_path / "copied-home")
    shutil.copytree(paths.root, copy.root)
    write_export(copy, "user_daily_features", [user_day(1, DAY1, 5), user_day(1, DAY3, 50)])

    with pytest.raises(FeatureStoreError) as error:
        materialize_incremental(at(copy), DAY3)
    message = str(error.value)
    assert str(paths.exports) in message and str(copy.exports.resolve()) in message
    assert "feature view 'item_attributes' reads" in message  # the first view, by name
    assert "rankflow features" in message

    apply_feature_repo(at(copy))
    materialize_incremental(at(copy), DAY3)
    # the copy now serves its own exports (user 1's DAY3 row: n=50), the original its own (n=2)
    copied = online_features(at(copy), request_rows(), feature_service=SERVICE).set_index("user_id")
    assert copied.loc[1, "user_impressions_1d"] == 50
    original = online_features(at(paths), request_rows(), feature_service=SERVICE).set_index(
        "user_id"
    )
    assert original.loc[1, "user_impressions_1d"] == 2
    with open_store(at(paths), offline=True):
        pass  # the original's registry still points at its own exports


def test_online_and_offline_on_demand_features_agree(paths: StatePaths) -> None:
    """The python-mode ODFV gives the same values on the online and the offline path."""
    apply_feature_repo(at(paths))
    end = exports_as_of(paths)
    assert end == DAY3
    materialize_incremental(at(paths), end)

    rows = request_rows()
    online = online_features(at(paths), rows, feature_service=SERVICE)
    entity_df = pd.DataFrame(rows).assign(event_timestamp=pd.Timestamp(end))
    entity_df["position"] = entity_df["position"].astype("int32")
    entity_df["hour_of_day"] = entity_df["hour_of_day"].astype("int32")
    with open_store(at(paths)) as store:
        schema = feature_service_schema(store, SERVICE)
        offline = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service("ctr_ranker_v1")
        ).to_df()
    offline = coerce_features(offline, schema).set_index("user_id").sort_index()
    online = online.set_index("user_id").sort_index()

    # User 2's newest row is DAY2: offline it is still within the one-day TTL at DAY3 00:00.
    pd.testing.assert_frame_equal(online[list(schema)], offline[list(schema)], check_exact=False)
    assert online["uc_ctr_lift"].notna().sum() == 1  # only user 1 has both CTRs and a nonzero one


def test_redis_profile_shares_registry_and_offline_store(paths: StatePaths) -> None:
    sqlite = repo_config(at(paths))
    redis = repo_config(at(paths), profile="redis")
    assert sqlite.online_store.type == "sqlite"
    assert Path(sqlite.online_store.path) == paths.feast / "online_store.db"
    assert redis.online_store.type == "redis"
    assert redis.online_store.connection_string == "localhost:6379"
    assert redis.registry.path == sqlite.registry.path == str(paths.feast / "registry.db")
    assert redis.offline_store.type == sqlite.offline_store.type == "duckdb"
    assert redis.entity_key_serialization_version == 3
    with pytest.raises(FeatureStoreError, match="unknown Feast online store 'mysql'"):
        repo_config(at(paths), profile="mysql")  # type: ignore[arg-type]


@pytest.mark.slow  # the feast CLI in two subprocesses
def test_feast_cli_applies_and_materializes_the_same_repo(paths: StatePaths) -> None:
    """`feast -c feature_repo apply` / `materialize-incremental` with RANKFLOW_HOME set work
    on the repo as-is, and interoperate with the Python path."""
    feast = Path(sys.executable).with_name("feast")
    if not feast.exists():
        feast = Path(shutil.which("feast") or "feast")
    env = {**os.environ, "RANKFLOW_HOME": str(paths.root), "FEAST_USAGE": "False"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(feast), "-c", str(FEATURE_REPO), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "ctr_ranker_v1" in cli("apply")
    materialize_incremental(
        at(paths), DAY2
    )  # the first load from Python (CLI would use wall clock)
    cli("materialize-incremental", DAY3.strftime("%Y-%m-%dT%H:%M:%S"))

    with open_store(at(paths)) as store:
        assert {v.most_recent_end_time for v in store.list_feature_views()} == {DAY3}
    online = online_features(at(paths), request_rows(), feature_service=SERVICE).set_index(
        "user_id"
    )
    assert online.loc[1, "user_impressions_1d"] == 3


def test_days_the_warehouse_rewrote_are_reloaded_into_the_online_store(paths: StatePaths) -> None:
    """materialize-incremental alone never reloads a day it already loaded; a build that
    rewrote one records it (rankflow.warehouse.rebuilt) and the next load starts there."""
    from rankflow.warehouse.rebuilt import pending_rebuild, record_rebuilt

    apply_feature_repo(at(paths))
    materialize_incremental(at(paths), DAY3)
    assert (
        online_features(at(paths), request_rows(), feature_service=SERVICE)
        .set_index("user_id")
        .loc[1, "user_impressions_1d"]
        == 3
    )
    # A corrected partition: user 1's latest loaded row changes in the export.
    rows = pq.read_table(export_path(paths, "user_daily_features")).to_pylist()
    (latest,) = [r for r in rows if r["user_id"] == 1 and r["user_impressions_1d"] == 3]
    rows = [user_day(1, r["feature_ts"], 9) if r is latest else r for r in rows]
    write_export(paths, "user_daily_features", rows)

    stale = materialize_incremental(at(paths), DAY3)  # what happened before the record existed
    assert {v.mode for v in stale.views.values()} == {"up_to_date"}
    assert (
        online_features(at(paths), request_rows(), feature_service=SERVICE)
        .set_index("user_id")
        .loc[1, "user_impressions_1d"]
        == 3
    )

    record_rebuilt(paths, [latest["feature_ts"].date()])
    reloaded = materialize_incremental(at(paths), DAY3)
    assert reloaded.views["user_daily_stats"].mode == "rebuilt"
    assert reloaded.views["user_daily_stats"].start.date() == latest["feature_ts"].date()
    assert (
        online_features(at(paths), request_rows(), feature_service=SERVICE)
        .set_index("user_id")
        .loc[1, "user_impressions_1d"]
        == 9
    )
    assert pending_rebuild(paths) is None  # consumed: the next load is incremental again
