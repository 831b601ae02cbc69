"""The warehouse invariant: after any sequence of raw changes, the incremental warehouse and its
exports equal a ``--full-refresh`` build of the same raw data, table by table.

Every check builds a second, private state from the same raw folder with ``full_refresh=True``
and the same ``as_of`` and compares every table and export (lineage columns aside: ``_load_id``,
``_loaded_at`` and the exports' ``created_ts`` say when a row was written, not what it says).
The tests here replay known cases one by one; tests/integration/test_warehouse_property.py
drives random sequences of changes (a module of its own, so the two can run on two workers).
All builds are real dbt builds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankflow.data.contract import ContractError, validate_raw
from rankflow.data.raw_files import list_raw
from rankflow.features.exports import EXPORT_SCHEMAS, export_files, export_path
from rankflow.paths import StatePaths
from rankflow.sim.simulate import SimulationConfig, simulate
from rankflow.warehouse import changes
from rankflow.warehouse.build import WarehouseResult, build_warehouse

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = date(2024, 3, 1)
USERS = pd.DataFrame(
    {
        "user_id": [1, 2, 3, 4],
        "segment": ["casual", "power", "casual", "deal_seeker"],
        "age_bucket": ["18-24", None, "25-34", "35-44"],
        "region": ["eu", "us", None, "eu"],
        "signup_ts": pd.to_datetime(["2024-01-01"] * 4, utc=True),
    }
)
ITEMS = pd.DataFrame(
    {
        "item_id": [10, 11, 12, 13],
        "category": ["books", "toys", "books", "garden"],
        "price": [5.0, 7.5, 3.0, -1.0],  # item 13: negative_price
        "created_ts": pd.to_datetime(["2024-01-01"] * 4, utc=True),
    }
)
TABLES = {  # table -> sort key (every table the build writes that has rows)
    "stg_impressions": "event_date, _source_file, _file_row_number",
    "fct_labelled_impressions": "event_id",
    "quarantined_impressions": "event_date, _source_file, _file_row_number",
    "user_daily_features": "user_id, feature_ts",
    "item_daily_features": "item_id, feature_ts",
    "user_category_daily_features": "user_id, category, feature_ts",
    "dim_users": "user_id",
    "dim_items": "item_id",
}
LINEAGE = {"_load_id", "_loaded_at", "created_ts"}


def at(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour)


def day_rows(day: date, version: int, n: int = 6, shared: int = 0) -> pd.DataFrame:
    """``n`` impressions of ``day``; ``version`` changes their content, ``shared`` of them reuse
    event ids from a small pool common to all days (duplicates across days)."""
    rng = np.random.default_rng([day.toordinal(), version])
    ids = [f"e-{day:%m%d}-{version}-{k}" for k in range(n)]
    for k in range(min(shared, n)):
        ids[k] = f"shared-{rng.integers(3)}"
    seconds = np.sort(rng.integers(0, 86_400, n))
    return pd.DataFrame(
        {
            "event_id": ids,
            "request_id": [f"r-{day:%m%d}-{version}-{k // 2}" for k in range(n)],
            "ts": [pd.Timestamp(at(day), tz="UTC") + pd.Timedelta(seconds=int(s)) for s in seconds],
            "user_id": rng.choice([1, 2, 3, 4, 9], n, p=[0.3, 0.3, 0.2, 0.15, 0.05]),
            "item_id": rng.choice([10, 11, 12, 13], n).astype("int64"),
            "position": rng.integers(1, 6, n).astype("int32"),
            "device": rng.choice(["mobile", "desktop", "tablet"], n),
            "clicked": rng.integers(0, 2, n).astype("int8"),
        }
    )


def put_day(raw: Path, day: date, rows: pd.DataFrame, name: str = "part-0.parquet") -> None:
    """Write one partition (replacing a file of the same name)."""
    folder = raw / "impressions" / f"event_date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / name, index=False)


def new_raw(raw: Path, days: list[date], version: int = 0, shared: int = 0) -> None:
    for name, frame in (("users", USERS), ("items", ITEMS)):
        (raw / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(raw / name / "part-0.parquet", index=False)
    for day in days:
        put_day(raw, day, day_rows(day, version, shared=shared))


def tables_of(paths: StatePaths) -> dict[str, pd.DataFrame]:
    """Every compared table and export, lineage columns dropped, rows in a fixed order."""
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        out = {}
        for table, key in TABLES.items():
            frame = con.execute(f"select * from main.{table} order by {key}").df()
            out[table] = frame.drop(columns=[c for c in frame.columns if c in LINEAGE])
        # The index the next build's duplicate check searches must follow the changes too.
        keys = "select event_date, event_key from _rankflow.event_keys order by all"
        out["_rankflow.event_keys"] = con.execute(keys).df()
    finally:
        con.close()
    for name in EXPORT_SCHEMAS:  # contents, whatever the files: one, or one per day
        frame = pd.read_parquet(export_path(paths, name))
        frame = frame.drop(columns=[c for c in frame.columns if c in LINEAGE])
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def assert_equals_full_build(paths: StatePaths, as_of: datetime, scratch: Path) -> None:
    """Build the same raw folder from scratch in ``scratch`` and compare everything.

    Everything of an earlier comparison in ``scratch`` is removed but its dbt folder: with the
    same folder and raw data path, dbt's partial parsing skips the parse (a third of a build)."""
    if scratch.is_dir():
        for leftover in scratch.iterdir():
            if leftover.name != "dbt":
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    full_paths = StatePaths(scratch)
    build_warehouse(full_paths, as_of=as_of, full_refresh=True, raw_dir=paths.raw)
    incremental, full = tables_of(paths), tables_of(full_paths)
    for name, expected in full.items():
        pd.testing.assert_frame_equal(incremental[name], expected, obj=name)


@pytest.fixture(scope="module")
def full_scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every comparison build of the module (see assert_equals_full_build)."""
    return tmp_path_factory.mktemp("full-build")


def count(paths: StatePaths, sql: str) -> int:
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return int(con.execute(sql).fetchall()[0][0])
    finally:
        con.close()


def build(paths: StatePaths, as_of: datetime) -> WarehouseResult:
    return build_warehouse(paths, as_of=as_of)


# Built starting states, one per (inputs, worker process): the first test that needs one builds
# it and keeps a pristine copy; later tests get that copy back at the same path. The path
# matters: the build's settings key includes the raw folder, so a state moved elsewhere would
# rebuild in full. Each test still starts from a real full build of the same raw data (a full dbt
# build saved per test: ~10 s each); only the raw files' inodes differ, so the first build
# re-hashes them and finds no change. The cache is keyed by everything the state is built from,
# so a test asking for other days, another clock or another sharing never gets a wrong start.
_StartKey = tuple[tuple[date, ...], datetime, int]
_STARTS: dict[_StartKey, tuple[Path, Path]] = {}


def _start_state(
    factory: pytest.TempPathFactory, days: list[date], clock: datetime, shared: int = 0
) -> Path:
    key = (tuple(days), clock, shared)
    if key not in _STARTS:
        base = factory.mktemp("start")
        work, pristine = base / "state", base / "pristine"
        new_raw(StatePaths(work).raw, days, shared=shared)
        build(StatePaths(work), clock)
        shutil.copytree(work, pristine, symlinks=True)
        _STARTS[key] = (work, pristine)
        return work
    work, pristine = _STARTS[key]
    shutil.rmtree(work)
    shutil.copytree(pristine, work, symlinks=True)
    return work


# --- known cases, one by one ------------------------------------------------------------------------


@pytest.fixture
def three_days(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[StatePaths, list[date], datetime]:
    days = [START + timedelta(days=k) for k in range(3)]
    clock = at(days[-1], 20)
    return StatePaths(_start_state(tmp_path_factory, days, clock)), days, clock


def test_a_future_partition_never_stops_later_days(
    three_days: tuple[StatePaths, list[date], datetime], full_scratch: Path
) -> None:
    paths, days, clock = three_days
    future = days[-1] + timedelta(days=5)
    put_day(paths.raw, future, day_rows(future, 1))
    build(paths, clock)
    future_sql = (
        "select count(*) from quarantined_impressions "
        f"where reason = 'future_ts' and event_date = '{future}'"
    )
    assert count(paths, future_sql) == 6
    # the next days arrive and the clock moves on: they load although a later day exists
    later = [days[-1] + timedelta(days=k) for k in (1, 2)]
    for day in later:
        put_day(paths.raw, day, day_rows(day, 1))
    clock = at(later[-1], 22)
    build(paths, clock)
    assert (
        count(
            paths, f"select count(*) from fct_labelled_impressions where event_date = '{later[-1]}'"
        )
        > 0
    )
    # the bad partition is removed: it leaves the quarantine, nothing else needed
    shutil.rmtree(paths.raw / "impressions" / f"event_date={future}")
    build(paths, clock)
    assert count(paths, future_sql) == 0
    assert count(paths, f"select count(*) from stg_impressions where event_date = '{future}'") == 0
    assert_equals_full_build(paths, clock, full_scratch)


def test_a_rewritten_older_partition_replaces_that_day(
    three_days: tuple[StatePaths, list[date], datetime], full_scratch: Path
) -> None:
    paths, days, clock = three_days
    put_day(paths.raw, days[0], day_rows(days[0], 0).head(1))  # outside the 1-day lookback
    result = build(paths, clock)
    assert not result.full_refresh
    assert count(paths, f"select count(*) from stg_impressions where event_date = '{days[0]}'") == 1
    assert_equals_full_build(paths, clock, full_scratch)


def test_resimulating_with_a_later_end_date_keeps_no_old_day(tmp_path: Path) -> None:
    """The simulator's own output, re-run one day later, whatever it does with existing days."""
    paths = StatePaths(tmp_path / "state")
    end = date(2024, 3, 8)
    config = SimulationConfig(n_users=40, n_items=20, n_impressions=700, days=4, end_date=end)
    simulate(config, paths.raw, paths.truth)
    build(paths, at(end, 1))
    later = config.model_copy(update={"end_date": end + timedelta(days=1)})
    simulate(later, paths.raw, paths.truth)
    clock = at(end + timedelta(days=1), 1)
    build(paths, clock)
    raw_days = sorted(
        p.name.split("=")[1] for p in (paths.raw / "impressions").iterdir() if p.is_dir()
    )
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        built = [
            str(r[0])
            for r in con.execute(
                "select distinct event_date from stg_impressions order by 1"
            ).fetchall()
        ]
        truth_ids = set(pd.read_parquet(paths.truth / "impressions")["event_id"])
        ids = {
            r[0] for r in con.execute("select event_id from fct_labelled_impressions").fetchall()
        }
    finally:
        con.close()
    assert built == raw_days
    assert ids <= truth_ids  # every label in the warehouse belongs to today's simulation
    assert_equals_full_build(paths, clock, tmp_path / "full")


def test_files_the_contract_skips_are_never_loaded(
    three_days: tuple[StatePaths, list[date], datetime], full_scratch: Path
) -> None:
    paths, days, clock = three_days
    before = count(paths, "select count(*) from stg_impressions")
    folder = paths.raw / "impressions" / f"event_date={days[1]}"
    day_rows(days[1], 7).to_parquet(folder / "_x.parquet")
    day_rows(days[1], 8).to_parquet(folder / ".x.parquet")
    (folder / "extra.csv").write_text("event_id\nx\n")
    spark = paths.raw / "impressions" / "_temporary" / "0"
    spark.mkdir(parents=True)
    day_rows(days[1], 9).to_parquet(spark / "part-0.parquet")
    result = build(paths, clock)
    assert count(paths, "select count(*) from stg_impressions") == before
    prefix = f"raw/impressions/event_date={days[1]}/"
    assert {prefix + "_x.parquet", prefix + ".x.parquet", prefix + "extra.csv"} <= set(
        result.skipped
    )
    assert "raw/impressions/_temporary" in result.skipped
    assert "skipped raw paths (not data)" in str(result)
    assert_equals_full_build(paths, clock, full_scratch)


def test_a_file_with_corrupt_pages_fails_the_contract_check_by_name(
    three_days: tuple[StatePaths, list[date], datetime],
) -> None:
    paths, days, clock = three_days
    path = paths.raw / "impressions" / f"event_date={days[1]}" / "part-0.parquet"
    pq.write_table(pq.read_table(path), path, write_page_checksum=True)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for k in range(64, len(data) - footer - 64, 97):  # damage the pages, keep the footer valid
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    pq.read_metadata(path)  # the footer still reads: only a page-by-page read finds the damage
    before = tables_of(paths)
    with pytest.raises(
        ContractError, match=rf"event_date={days[1]}/part-0.parquet: is not a readable"
    ):
        build(paths, clock)
    after = tables_of(paths)
    assert all(before[k].equals(after[k]) for k in before)


def test_the_flows_contract_check_trusts_only_files_the_live_manifest_knows_unchanged(
    three_days: tuple[StatePaths, list[date], datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flow's contract-check task reads values only of files the live warehouse did not
    # load as they are now (new, rewritten, or the manifest built under other settings).
    from rankflow.warehouse.build import trusted_raw_files

    monkeypatch.setattr(changes, "RACY_SECONDS", 0.0)
    paths, days, clock = three_days
    build(paths, clock)  # records today's stat keys (the fixture's copy has new inodes)
    raw = paths.raw.resolve()
    listed = sorted(p for files in list_raw(raw).files.values() for p in files)
    assert sorted(trusted_raw_files(paths)) == listed

    rewritten = raw / "impressions" / f"event_date={days[1]}" / "part-0.parquet"
    pq.write_table(pq.read_table(rewritten), rewritten)  # same rows, a new write
    trusted = trusted_raw_files(paths)
    assert sorted(trusted) == [p for p in listed if p != rewritten]
    inventory = validate_raw(raw, deep=(), trusted=trusted)
    assert inventory.values_read == [f"raw/impressions/event_date={days[1]}/part-0.parquet"]

    # other settings (here: dbt vars) or no warehouse: nothing is trusted
    assert trusted_raw_files(paths, vars={"lookback_days": 3}) == []
    assert trusted_raw_files(StatePaths(paths.root / "elsewhere"), raw_dir=raw) == []
    # a process holding the warehouse for writing: nothing is trusted, and no error
    writer = duckdb.connect(str(paths.warehouse))
    try:
        held = subprocess.run(
            [sys.executable, "-c", _TRUSTED_IN_ANOTHER_PROCESS, str(paths.root)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        writer.close()
    assert held.stdout.strip() == "0"


_TRUSTED_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from rankflow.paths import StatePaths
from rankflow.warehouse.build import trusted_raw_files
print(len(trusted_raw_files(StatePaths(Path(sys.argv[1])))))
"""


def test_build_checks_the_contract_and_a_fixed_day_leaves_the_quarantine(
    three_days: tuple[StatePaths, list[date], datetime], full_scratch: Path
) -> None:
    paths, days, clock = three_days
    good = day_rows(days[0], 0)
    put_day(paths.raw, days[0], good.drop(columns=["device"]))
    with pytest.raises(ContractError, match="column 'device' is missing"):
        build(paths, clock)
    # a day of rows with a bad device value is quarantined, then fixed
    put_day(paths.raw, days[0], good.assign(device="fridge"))
    result = build(paths, clock)
    assert result.quarantine_counts.get("invalid_device", 0) > 0
    put_day(paths.raw, days[0], good)
    result = build(paths, clock)
    assert "invalid_device" not in result.quarantine_counts
    assert (
        count(paths, "select count(*) from quarantined_impressions where reason = 'invalid_device'")
        == 0
    )
    assert_equals_full_build(paths, clock, full_scratch)


def test_a_raw_folder_named_with_a_quote_a_space_and_a_semicolon(tmp_path: Path) -> None:
    raw = tmp_path / "it's raw; data"
    days = [START, START + timedelta(days=1)]
    new_raw(raw, days)
    paths = StatePaths(tmp_path / "state")
    result = build_warehouse(paths, as_of=at(days[-1], 23), raw_dir=raw)
    assert result.row_counts["stg_impressions"] == 12
    put_day(raw, days[0], day_rows(days[0], 3).head(2))
    result = build_warehouse(paths, as_of=at(days[-1], 23), raw_dir=raw)
    assert result.row_counts["stg_impressions"] == 8
    assert (
        count(
            paths,
            "select count(*) from stg_impressions where _source_file like '%it''s raw; data%'",
        )
        == 8
    )


def test_an_unchanged_raw_folder_rebuilds_only_the_lookback(
    three_days: tuple[StatePaths, list[date], datetime],
) -> None:
    paths, days, clock = three_days
    result = build(paths, clock)
    assert result.plan.startswith("incremental: 0 changed day(s), 1 day(s) reloaded")
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        reloaded = con.execute("select day from _rankflow.reload_days").fetchall()
    finally:
        con.close()
    assert reloaded == [(days[-1],)]


def test_a_daily_build_rewrites_only_the_export_days_it_redid(
    three_days: tuple[StatePaths, list[date], datetime],
) -> None:
    """Per-day export files: a new day writes its own files (and the feature day it feeds);
    every other day's file is the previous build's, carried over (hard link: same inode). The
    contents equal a full build's: the property test above checks that after every change."""
    paths, days, clock = three_days

    def inodes(name: str) -> dict[str, int]:
        return {f.name: f.stat().st_ino for f in export_files(paths, name)}

    before = {name: inodes(name) for name in ("labelled_impressions", "user_daily_features")}
    new_day = days[-1] + timedelta(days=1)
    put_day(paths.raw, new_day, day_rows(new_day, 1))
    clock = at(new_day, 20)
    result = build(paths, clock)
    assert not result.full_refresh

    labelled = inodes("labelled_impressions")
    assert set(labelled) == {f"{d}.parquet" for d in [*days, new_day]}
    # the reloaded days: the new day and the 1-day lookback (the previous newest day)
    redone = {f"{new_day}.parquet", f"{days[-1]}.parquet"}
    for file, inode in labelled.items():
        assert (inode == before["labelled_impressions"].get(file)) is (file not in redone), file
    features = inodes("user_daily_features")
    kept = {f for f, i in features.items() if i == before["user_daily_features"].get(f)}
    assert kept and f"{new_day + timedelta(days=1)}.parquet" in set(features) - kept
    # each file holds only the rows of its own day
    for name in ("labelled_impressions", "user_daily_features"):
        for file in export_files(paths, name):
            column = "event_timestamp" if name == "labelled_impressions" else "feature_ts"
            stamps = pd.read_parquet(file, columns=[column])[column]
            assert {str(d) for d in stamps.dt.date} == {file.stem}, file
