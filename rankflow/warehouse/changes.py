"""What an incremental build must redo: the raw manifest and the change plan.

The warehouse keeps, inside its own database file (schema ``_rankflow``), a manifest of the raw
files it was built from: table, partition day, file, size, a content fingerprint and the stat
key it was computed under (an unchanged file is not read again; ``scan``). A build compares
the raw folder of today with it and plans the work by content, not by dates:

- a day whose files were added, rewritten or removed is reloaded (a removed day is deleted
  from staging, marts and quarantine);
- the newest ``lookback_days`` raw days are reloaded as well (declared late-data lookback);
- every day on or after the earlier of the previous and the current ``as_of`` day is reloaded,
  because the future-timestamp rule judges those rows against "now";
- a change in ``users/`` or ``items/``, in the dbt project, in the dbt vars, in the contract
  check's code or in the raw folder itself, or a missing manifest, makes the build a full
  refresh (the quarantine rules of every day depend on users and items; files the manifest
  knows are trusted to pass the contract check they passed, which holds only for the same code).

The manifest lives in the database so that it is swapped in with the warehouse it describes:
they can never disagree. Days that share an ``event_id`` with a reloaded day are added later,
inside the build (``duplicate_days``), because duplicate marking looks across days.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from rankflow.data import contract, contract_types, raw_files
from rankflow.data.raw_files import RawListing, fingerprint, list_raw

# Bump when the meaning of the manifest or of the incremental rules changes: forces a full build.
# 2: the manifest records each file's stat key (the fingerprint cache).
# 3: the event-key index (``event_keys``) the cross-day duplicate check reads.
PLAN_VERSION = "3"
# A file modified less than this long before a scan keeps no stat key: a second write within the
# file system's timestamp granularity could leave size and times unchanged ("racy" entries,
# as git calls them), so such a file is hashed again by the next build.
RACY_SECONDS = 2.0
STATE_SCHEMA = "_rankflow"


@dataclass(frozen=True)
class FileEntry:
    """One raw data file as the manifest records it."""

    table: str
    day: date | None  # impressions partition day; None for users / items
    file: str  # path relative to the raw folder
    size: int
    fingerprint: str
    stat_key: str = ""  # device, inode, size, mtime, ctime when hashed; "" = hash again


@dataclass(frozen=True)
class BuildState:
    """What the previous build recorded beside its tables."""

    entries: list[FileEntry]
    as_of: datetime
    settings_key: str  # hash of dbt project files, vars, raw folder and PLAN_VERSION
    newest_day: date | None  # newest impressions day <= as_of (the feature marts' cutoff)


@dataclass
class BuildPlan:
    """The decision of one build: full, or which days to reload and why."""

    full: bool
    reason: str
    entries: list[FileEntry]
    settings_key: str
    reload_days: set[date] = field(default_factory=set)
    changed_days: set[date] = field(default_factory=set)  # added / rewritten / removed
    changed_files: list[Path] = field(default_factory=list)  # new or rewritten: validate deeply
    unchanged_files: list[Path] = field(default_factory=list)  # same content as the manifest's
    skipped: list[str] = field(default_factory=list)  # raw paths that are not data (noted)
    decoded: list[str] = field(default_factory=list)  # files the contract check read page by page
    as_of: datetime | None = None  # "now" of the build (naive UTC), handed to dbt as a table

    def describe(self) -> str:
        if self.full:
            return f"full rebuild ({self.reason})"
        days = sorted(self.reload_days)
        shown = ", ".join(d.isoformat() for d in days[:6]) + (" ..." if len(days) > 6 else "")
        return (
            f"incremental: {len(self.changed_days)} changed day(s), "
            f"{len(days)} day(s) reloaded{': ' + shown if days else ''}"
        )


def scan(listing: RawListing, previous: BuildState | None = None) -> list[FileEntry]:
    """The manifest entries of today's raw folder (every listed file, fingerprinted).

    A file whose stat key (device, inode, size, modification and change times, in ns) equals
    the one the previous build recorded keeps that build's fingerprint without being read
    again: any write to the file, a replacement by rename or a copy changes the change time,
    which no user-space call can set back. So a daily build reads only the new and rewritten
    files, not the whole history.
    """
    known = {e.file: e for e in previous.entries if e.stat_key} if previous else {}
    now = time.time()
    entries = []
    for table, files in listing.files.items():
        for path in files:
            relative = path.relative_to(listing.raw_dir).as_posix()
            info = path.stat()
            key = stat_key(info)
            cached = known.get(relative)
            digest = cached.fingerprint if cached and cached.stat_key == key else fingerprint(path)
            settled = now - max(info.st_mtime, info.st_ctime) > RACY_SECONDS
            entries.append(
                FileEntry(
                    table=table,
                    day=listing.partition_of(path) if table == "impressions" else None,
                    file=relative,
                    size=info.st_size,
                    fingerprint=digest,
                    stat_key=key if settled else "",
                )
            )
    return entries


def stat_key(info: os.stat_result) -> str:
    """What the file system says about a file's identity and last change (not its content)."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def settings_key(project_dir: Path, dbt_vars: dict[str, Any], raw_dir: Path) -> str:
    """A hash of everything besides raw data that decides the warehouse's contents."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(PLAN_VERSION.encode())
    # event_keys holds DuckDB's hash() of each event id, which DuckDB does not promise to keep
    # across releases: a new DuckDB rebuilds the warehouse (and the keys) once.
    digest.update(duckdb.__version__.encode())
    digest.update(json.dumps(dbt_vars, sort_keys=True, default=str).encode())
    digest.update(str(raw_dir).encode())
    # The contract check trusts files the manifest knows (``trusted_by_manifest``): they passed
    # the check of the code that built the warehouse, so new check code rebuilds in full.
    for module in (contract, contract_types, raw_files):
        digest.update(Path(module.__file__).read_bytes())
    for path in sorted(project_dir.rglob("*")):
        generated = {"target", "logs", "dbt_packages"} & set(path.relative_to(project_dir).parts)
        if path.suffix in (".sql", ".yml", ".yaml") and path.is_file() and not generated:
            digest.update(path.relative_to(project_dir).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def plan_build(
    previous: BuildState | None,
    entries: list[FileEntry],
    *,
    raw_dir: Path,
    as_of: datetime,
    key: str,
    lookback_days: int,
    full_refresh: bool,
    force_full: str | None = None,
) -> BuildPlan:
    """Compare today's raw files with the previous build's manifest and decide the work.

    ``changed_files`` (decoded page by page by the contract check) are the files not in the
    manifest with the same content: a file the last good build loaded was decoded then. Without
    a manifest, or on ``--full-refresh``, every file is. The others (``unchanged_files``) get
    only their footers checked. ``force_full`` is a reason, found by the
    caller, to rebuild everything (e.g. live exports an incremental build would carry over are
    missing).
    """
    reason = _full_reason(previous, entries, key, full_refresh) or force_full
    known = (
        {}
        if previous is None or full_refresh
        else {e.file: e.fingerprint for e in previous.entries}
    )
    changed_files = [raw_dir / e.file for e in entries if known.get(e.file) != e.fingerprint]
    unchanged_files = [raw_dir / e.file for e in entries if known.get(e.file) == e.fingerprint]
    files = {"changed_files": changed_files, "unchanged_files": unchanged_files}
    if reason is not None or previous is None:
        return BuildPlan(True, reason or "", entries, key, **files)
    old = _by_day(previous.entries)
    new = _by_day(entries)
    changed = {day for day in old.keys() | new.keys() if old.get(day) != new.get(day)}
    raw_days = sorted(new)
    reload = set(changed) | set(raw_days[-lookback_days:] if lookback_days > 0 else [])
    judged_from = min(previous.as_of, as_of).date()  # rows judged against "now" may flip
    reload |= {day for day in old.keys() | new.keys() if day >= judged_from}
    return BuildPlan(False, "incremental", entries, key, reload, changed, **files)


def _full_reason(
    previous: BuildState | None, entries: list[FileEntry], key: str, full_refresh: bool
) -> str | None:
    if full_refresh:
        return "--full-refresh"
    if previous is None:
        return "no manifest of a previous build"
    if previous.settings_key != key:
        return "dbt project, dbt vars, contract code or raw folder changed since the last build"

    def dims(items: list[FileEntry]) -> set[tuple[str, str, int, str]]:
        return {(e.table, e.file, e.size, e.fingerprint) for e in items if e.day is None}

    if dims(previous.entries) != dims(entries):
        return "users/ or items/ changed (they decide the quarantine of every day)"
    return None


def _by_day(entries: list[FileEntry]) -> dict[date, frozenset[tuple[str, int, str]]]:
    days: dict[date, set[tuple[str, int, str]]] = {}
    for e in entries:
        if e.day is not None:
            days.setdefault(e.day, set()).add((e.file, e.size, e.fingerprint))
    return {day: frozenset(files) for day, files in days.items()}


# --- the state tables inside the warehouse --------------------------------------------------


def trusted_by_manifest(warehouse: Path, raw_dir: Path, key: str) -> list[Path]:
    """The raw files the live warehouse's manifest records with today's stat key, under the same
    settings ``key``: the build that loaded them passed them through the contract check, and
    they have not been written since (``scan``'s reasoning), so the check need not read their
    values again (``validate_raw``'s ``trusted``).

    Reads the warehouse read-only and trusts nothing when it is missing, of an older layout,
    built under other settings, or held by a process writing to it: the check then reads
    every file's values, which is slower but never wrong.
    """
    if not warehouse.is_file():
        return []
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error:  # locked by a writer, or not a database: trust nothing
        return []
    try:
        state = read_state(con)
    except duckdb.Error:
        state = None
    finally:
        con.close()
    if state is None or state.settings_key != key:
        return []
    known = {e.file: e.stat_key for e in state.entries if e.stat_key}
    listing = list_raw(raw_dir)
    return [
        path
        for files in listing.files.values()
        for path in files
        if known.get(path.relative_to(listing.raw_dir).as_posix()) == stat_key(path.stat())
    ]


def read_state(con: duckdb.DuckDBPyConnection) -> BuildState | None:
    """The previous build's state, or None when the database has none (or an older layout)."""
    try:
        info = dict(con.execute(f"select key, value from {STATE_SCHEMA}.build_info").fetchall())
        if info.get("plan_version") != PLAN_VERSION:  # an older layout: rebuild in full
            return None
        rows = con.execute(
            f"select tbl, day, file, size, fingerprint, stat_key from {STATE_SCHEMA}.raw_manifest"
        ).fetchall()
    except duckdb.CatalogException:
        return None
    newest = info.get("newest_day")
    return BuildState(
        entries=[FileEntry(*row) for row in rows],
        as_of=datetime.fromisoformat(info["as_of"]),
        settings_key=info["settings_key"],
        newest_day=date.fromisoformat(newest) if newest else None,
    )


def write_plan_tables(
    con: duckdb.DuckDBPyConnection, plan: BuildPlan, previous: BuildState | None, as_of: datetime
) -> None:
    """Hand the plan to dbt as tables: the reload days, the previous feature cutoff and "now"
    (``as_of``, naive UTC) - tables rather than dbt vars, so dbt's partial parsing holds."""
    con.execute(f"create schema if not exists {STATE_SCHEMA}")
    con.execute(f"create or replace table {STATE_SCHEMA}.build_clock (as_of timestamp)")
    con.execute(f"insert into {STATE_SCHEMA}.build_clock values (?)", [as_of])
    con.execute(f"create or replace table {STATE_SCHEMA}.reload_days (day date primary key)")
    con.executemany(
        f"insert into {STATE_SCHEMA}.reload_days values (?)",
        [(day,) for day in sorted(plan.reload_days)],
    )
    con.execute(f"create or replace table {STATE_SCHEMA}.previous_cutoff (newest_day date)")
    con.execute(
        f"insert into {STATE_SCHEMA}.previous_cutoff values (?)",
        [previous.newest_day if previous and not plan.full else None],
    )


def write_state(
    con: duckdb.DuckDBPyConnection, plan: BuildPlan, as_of: datetime, newest_day: date | None
) -> None:
    """Record what this build was made from; replaces the previous build's record."""
    con.execute(f"create schema if not exists {STATE_SCHEMA}")
    con.execute(
        f"create or replace table {STATE_SCHEMA}.raw_manifest "
        "(tbl varchar, day date, file varchar, size bigint, fingerprint varchar, stat_key varchar)"
    )
    # One insert from an Arrow table: executemany costs about a millisecond a row, and the
    # manifest has a row per raw file (the cost grew with the history).
    rows = pa.table(
        {
            "tbl": pa.array([e.table for e in plan.entries], pa.string()),
            "day": pa.array([e.day for e in plan.entries], pa.date32()),
            "file": pa.array([e.file for e in plan.entries], pa.string()),
            "size": pa.array([e.size for e in plan.entries], pa.int64()),
            "fingerprint": pa.array([e.fingerprint for e in plan.entries], pa.string()),
            "stat_key": pa.array([e.stat_key for e in plan.entries], pa.string()),
        }
    )
    con.register("_rankflow_manifest_rows", rows)
    try:
        con.execute(
            f"insert into {STATE_SCHEMA}.raw_manifest by name select * from _rankflow_manifest_rows"
        )
    finally:
        con.unregister("_rankflow_manifest_rows")
    con.execute(f"create or replace table {STATE_SCHEMA}.build_info (key varchar, value varchar)")
    info = {
        "plan_version": PLAN_VERSION,
        "as_of": as_of.replace(tzinfo=None).isoformat(),
        "settings_key": plan.settings_key,
        "newest_day": newest_day.isoformat() if newest_day else "",
        "plan": plan.describe(),
    }
    con.executemany(f"insert into {STATE_SCHEMA}.build_info values (?, ?)", list(info.items()))


def duplicate_days(con: duckdb.DuckDBPyConnection, reload_days: set[date]) -> set[date]:
    """Days not reloaded whose rows share an ``event_id`` with a reloaded day, old or new.

    Which copy of an event counts is decided across all days, so those days' ``is_duplicate``
    marks (and therefore their marts and quarantine) may change: they are reloaded too. Needs
    ``raw.impressions`` loaded with the reload days and the previous build's ``event_keys``.

    The history is searched by 64-bit hash (``event_keys``), not by the id strings: the one pass
    over the history that a daily build makes is then a scan of integers (about 7x faster at 180
    days). Two ids with the same hash only reload a day more than needed, never miss one.
    """
    rows = con.execute(
        f"""
        with reloaded as (select day from {STATE_SCHEMA}.reload_days)
        select distinct kept.event_date from {STATE_SCHEMA}.event_keys as kept
        where kept.event_key in (
                select hash(event_id) from raw.impressions where event_id is not null
                union all
                select event_key from {STATE_SCHEMA}.event_keys
                where event_date in (select day from reloaded)
            )
          and kept.event_date not in (select day from reloaded)
        """
    ).fetchall()
    return {row[0] for row in rows} - reload_days


def write_event_keys(con: duckdb.DuckDBPyConnection, full: bool) -> None:
    """Keep ``event_keys`` (event day, hash of event id) equal to ``stg_impressions``' ids:
    rebuilt on a full build, its reloaded days replaced on an incremental one."""
    keys = f"{STATE_SCHEMA}.event_keys"
    select = (
        "select event_date, hash(event_id) as event_key from main.stg_impressions "
        "where event_id is not null"
    )
    if full:
        con.execute(f"create schema if not exists {STATE_SCHEMA}")
        con.execute(f"create or replace table {keys} as {select} order by event_date")
        return
    reloaded = f"(select day from {STATE_SCHEMA}.reload_days)"
    con.execute(f"delete from {keys} where event_date in {reloaded}")
    con.execute(f"insert into {keys} {select} and event_date in {reloaded} order by event_date")
