"""The warehouse wrapper's own logic, without running dbt: swap, locks, errors, raw layout."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from rankflow.data.raw_files import fingerprint, list_raw
from rankflow.errors import LockedError
from rankflow.locks import warehouse_lock
from rankflow.paths import StatePaths
from rankflow.times import as_utc
from rankflow.warehouse import build as warehouse
from rankflow.warehouse import changes, scratch
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
    monkeypatch.setattr(scratch, "repoint_export_views", lambda db, exp: repointed.append(exp))

    scratch.swap_in(build_db, live_db, build_exports, live_exports)

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

    monkeypatch.setattr(scratch, "repoint_export_views", fail)
    with pytest.raises(OSError, match="disk full"):
        scratch.swap_in(build_db, live_db, build_exports, live_exports)

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
    monkeypatch.setattr(scratch, "repoint_export_views", lambda db, exp: None)

    scratch.swap_in(build_db, live_db, build_exports, live_exports)

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


# --- the fingerprint cache of changes.scan ----------------------------------------------------


def _one_day_raw(raw: Path, payload: bytes = b"a" * 64) -> Path:
    for table in ("users", "items"):
        (raw / table).mkdir(parents=True, exist_ok=True)
        (raw / table / "part-0.parquet").write_bytes(b"x")
    day = raw / "impressions" / "event_date=2024-03-01"
    day.mkdir(parents=True, exist_ok=True)
    (day / "part-0.parquet").write_bytes(payload)
    return day / "part-0.parquet"


def _state_of(entries: list[changes.FileEntry]) -> changes.BuildState:
    return changes.BuildState(entries, datetime(2024, 3, 2), "key", None)


def test_scan_keeps_the_fingerprint_of_a_file_whose_stat_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "RACY_SECONDS", 0.0)
    _one_day_raw(tmp_path)
    first = changes.scan(list_raw(tmp_path))
    assert all(e.stat_key for e in first)
    # A planted fingerprint survives: the unchanged files were not read again.
    planted = [replace(e, fingerprint=f"planted-{e.file}") for e in first]
    again = changes.scan(list_raw(tmp_path), _state_of(planted))
    assert [e.fingerprint for e in again] == [e.fingerprint for e in planted]


def test_scan_hashes_a_rewritten_file_even_with_its_size_and_mtime_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(changes, "RACY_SECONDS", 0.0)
    path = _one_day_raw(tmp_path, b"a" * 64)
    before = changes.scan(list_raw(tmp_path))
    stat = path.stat()
    time.sleep(0.05)  # past the file system's timestamp granularity
    path.write_bytes(b"b" * 64)  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime; ctime moves anyway
    after = changes.scan(list_raw(tmp_path), _state_of(before))
    old, new = ({e.file: e.fingerprint for e in s} for s in (before, after))
    rel = path.relative_to(tmp_path).as_posix()
    assert new[rel] != old[rel]
    assert new[rel] == fingerprint(path)


def test_scan_records_no_stat_key_for_a_file_written_just_now(tmp_path: Path) -> None:
    # Within RACY_SECONDS of a write, a second write could leave the stat unchanged.
    _one_day_raw(tmp_path)
    entries = changes.scan(list_raw(tmp_path))
    assert entries and all(e.stat_key == "" for e in entries)
    replanted = [replace(e, fingerprint="planted") for e in entries]
    again = changes.scan(list_raw(tmp_path), _state_of(replanted))
    assert all(e.fingerprint != "planted" for e in again)
