"""The warehouse wrapper's own logic, without running dbt: swap, locks, errors, raw layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from rankflow.errors import LockedError
from rankflow.locks import warehouse_lock
from rankflow.paths import StatePaths
from rankflow.times import as_utc
from rankflow.warehouse import build as warehouse
from rankflow.warehouse.build import NodeFailure, WarehouseBuildError, write_raw


def _live_and_build(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    live_db = tmp_path / "warehouse" / "rankflow.duckdb"
    live_db.parent.mkdir()
    live_db.write_bytes(b"old db")
    live_exports = tmp_path / "exports"
    live_exports.mkdir()
    (live_exports / "a.parquet").write_bytes(b"old export")
    build_db = tmp_path / "warehouse" / ".build" / "rankflow.duckdb"
    build_db.parent.mkdir()
    build_db.write_bytes(b"new db")
    build_exports = tmp_path / ".exports-build"
    build_exports.mkdir()
    (build_exports / "a.parquet").write_bytes(b"new export")
    return live_db, live_exports, build_db, build_exports


def test_swap_replaces_warehouse_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_db, live_exports, build_db, build_exports = _live_and_build(tmp_path)
    repointed: list[Path] = []
    monkeypatch.setattr(warehouse, "_repoint_export_views", lambda db, exp: repointed.append(exp))

    warehouse._swap_in(build_db, live_db, build_exports, live_exports)

    assert live_db.read_bytes() == b"new db"
    assert (live_exports / "a.parquet").read_bytes() == b"new export"
    assert repointed == [live_exports]
    assert not build_exports.exists() and not build_db.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "warehouse"]


def test_swap_failure_restores_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_db, live_exports, build_db, build_exports = _live_and_build(tmp_path)

    def fail(db: Path, exports: Path) -> None:
        # by now the new exports are in the live place; the swap must move them back
        assert (exports / "a.parquet").read_bytes() == b"new export"
        raise OSError("disk full")

    monkeypatch.setattr(warehouse, "_repoint_export_views", fail)
    with pytest.raises(OSError, match="disk full"):
        warehouse._swap_in(build_db, live_db, build_exports, live_exports)

    assert live_db.read_bytes() == b"old db"
    assert (live_exports / "a.parquet").read_bytes() == b"old export"
    assert (build_exports / "a.parquet").read_bytes() == b"new export"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exports-old")]


def test_first_swap_without_previous_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_db, live_exports, build_db, build_exports = _live_and_build(tmp_path)
    live_db.unlink()
    for f in live_exports.iterdir():
        f.unlink()
    live_exports.rmdir()
    monkeypatch.setattr(warehouse, "_repoint_export_views", lambda db, exp: None)

    warehouse._swap_in(build_db, live_db, build_exports, live_exports)

    assert live_db.read_bytes() == b"new db"
    assert (live_exports / "a.parquet").exists()


def test_second_build_on_the_same_state_fails_fast(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    with (
        warehouse_lock(paths),
        pytest.raises(LockedError, match=r"^warehouse build is already running \(pid \d+ holds"),
        warehouse_lock(paths),
    ):
        pass
    with warehouse_lock(paths):  # released afterwards
        pass


def test_as_utc() -> None:
    assert as_utc(datetime(2024, 3, 1, 12)) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    converted = as_utc(datetime(2024, 3, 1, 1, tzinfo=plus_two))
    assert converted == datetime(2024, 2, 29, 23, tzinfo=UTC)
    assert converted.tzinfo == UTC
    assert as_utc(pd.Timestamp("2024-03-01 12:00")) == datetime(2024, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(TypeError, match="expected a datetime"):
        as_utc("2024-03-01")


def test_failure_description_names_test_model_and_column() -> None:
    failure = NodeFailure(
        unique_id="test.rankflow.not_null_stg_users_segment.abc",
        resource_type="test",
        status="fail",
        message="Got 1 result, configured to fail if != 0",
        model="stg_users",
        column="segment",
    )
    text = failure.describe()
    assert "not_null_stg_users_segment" in text
    assert "column 'segment' of stg_users" in text
    assert "Got 1 result" in text


def test_missing_raw_folders_are_named(tmp_path: Path) -> None:
    (tmp_path / "items").mkdir()
    with pytest.raises(WarehouseBuildError, match=r"lacks users/, impressions/"):
        warehouse._check_raw_dir(tmp_path)


def test_build_refuses_missing_raw_before_touching_state(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "state")
    with pytest.raises(WarehouseBuildError, match="data-contract"):
        warehouse.build_warehouse(paths)
    assert not paths.warehouse.parent.exists()


def test_write_raw_partitions_by_utc_day(tmp_path: Path) -> None:
    users = pd.DataFrame({"user_id": [1]})
    items = pd.DataFrame({"item_id": [1]})
    impressions = pd.DataFrame(
        {
            "event_id": ["late", "early"],
            # shown in UTC+2 both are on 03-02; in UTC the first is still 03-01 23:30
            "ts": pd.to_datetime(
                ["2024-03-01 23:30:00", "2024-03-02 00:00:00"], utc=True
            ).tz_convert("Etc/GMT-2"),
        }
    )
    write_raw(tmp_path, users, items, impressions)

    days = sorted(p.name for p in (tmp_path / "impressions").iterdir())
    assert days == ["event_date=2024-03-01", "event_date=2024-03-02"]
    first = pd.read_parquet(tmp_path / "impressions" / "event_date=2024-03-01" / "part-0.parquet")
    assert first["event_id"].tolist() == ["late"]
    assert (tmp_path / "users" / "part-0.parquet").is_file()


def test_build_refuses_a_live_warehouse_with_a_write_ahead_log(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    for table in ("users", "items", "impressions"):
        (paths.raw / table).mkdir(parents=True)
    paths.warehouse.parent.mkdir(parents=True)
    paths.warehouse.write_bytes(b"live")
    wal = paths.warehouse.with_name("rankflow.duckdb.wal")
    wal.write_bytes(b"pending")

    with pytest.raises(WarehouseBuildError, match=r"rankflow\.duckdb\.wal exists"):
        warehouse.build_warehouse(paths)

    assert paths.warehouse.read_bytes() == b"live" and wal.read_bytes() == b"pending"
    assert not (paths.warehouse.parent / ".build").exists()
