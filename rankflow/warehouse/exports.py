"""Write the per-day parquet exports Feast reads, rewriting only the days a build redid.

The four large exports (labelled impressions and the three daily feature tables) are dbt views
over the day-incremental marts. After a good ``dbt build`` this module writes each as a folder
of one parquet file per day (``<exports>/<name>/YYYY-MM-DD.parquet``), and Feast reads the
folder through one glob ``FileSource`` (``<name>/*.parquet``; feature_repo/data_sources.py).

Why per day: a daily build changes one or two days of each export; rewriting the whole file
made the export cost grow with the history. Here a day whose rows this build wrote (its
``_load_id``, which every row of the marts carries) is written again; every other day that
still has rows is carried over from the live exports folder by a hard link (a copy where the
file system has no links), and a day with no rows left is simply not carried over. The new
folder is built beside the live one and swapped in with the warehouse, as before. A full build
writes every day. What the files hold never depends on which build wrote them: the invariant
test compares their contents with a full build's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from rankflow.errors import RankflowError

# The columns the export views carry for this module only; never written to the files.
DAY_COLUMN = "_export_day"
LOAD_COLUMN = "_load_id"
EMPTY_FILE = "empty.parquet"
# The attribute exports: dbt model -> the parquet file it writes, whole, under the exports folder
# (one row per user / item; an incremental build carries them over, since users/ and items/
# changing forces a full build).
ATTRIBUTE_EXPORTS: dict[str, str] = {
    "export_user_attributes": "user_attributes.parquet",
    "export_item_attributes": "item_attributes.parquet",
}  # an export with no rows at all still has its schema on disk


@dataclass(frozen=True)
class DailyExport:
    """One per-day export: the dbt view it is written from and the order of its rows."""

    name: str  # folder under exports/ (and the Feast source's name stem)
    model: str  # the dbt view
    order_by: str  # row order inside a day's file (stable files, better compression)


DAILY_EXPORTS: tuple[DailyExport, ...] = (
    DailyExport("labelled_impressions", "export_labelled_impressions", "event_timestamp, event_id"),
    DailyExport("user_daily_features", "export_user_daily_features", "user_id"),
    DailyExport("item_daily_features", "export_item_daily_features", "item_id"),
    DailyExport(
        "user_category_daily_features", "export_user_category_daily_features", "user_id, category"
    ),
)


@dataclass(frozen=True)
class ExportWrite:
    """What writing one export did: days written, days carried over, total rows."""

    name: str
    written: int
    kept: int
    rows: int


def day_file(folder: Path, day: date) -> Path:
    return folder / f"{day.isoformat()}.parquet"


def write_daily_exports(
    con: duckdb.DuckDBPyConnection,
    build_exports: Path,
    live_exports: Path,
    load_id: str,
    full: bool,
) -> list[ExportWrite]:
    """Write every per-day export into ``build_exports`` from the build database ``con``.

    ``load_id`` is the dbt invocation of this build: the days holding its rows are written;
    with ``full`` (or no previous file for a day) every day is written.
    """
    return [
        _write_one(con, export, build_exports, live_exports, load_id, full)
        for export in DAILY_EXPORTS
    ]


def _write_one(
    con: duckdb.DuckDBPyConnection,
    export: DailyExport,
    build_exports: Path,
    live_exports: Path,
    load_id: str,
    full: bool,
) -> ExportWrite:
    view = f"main.{export.model}"
    counts = dict(con.execute(f"select {DAY_COLUMN}, count(*) from {view} group by all").fetchall())
    redone = {
        row[0]
        for row in con.execute(
            f"select distinct {DAY_COLUMN} from {view} where {LOAD_COLUMN} = ?", [load_id]
        ).fetchall()
    }
    target, previous = build_exports / export.name, live_exports / export.name
    target.mkdir(parents=True)
    to_write = []
    kept = 0
    for day in sorted(counts):
        old = day_file(previous, day)
        if full or day in redone or not old.is_file():
            to_write.append(day)
        else:
            link_or_copy(old, day_file(target, day))
            kept += 1
    if to_write:
        _copy_days(con, export, view, target, to_write)
    if not counts:
        _write_empty(con, view, target / EMPTY_FILE)
    return ExportWrite(export.name, len(to_write), kept, sum(counts.values()))


def _copy_days(
    con: duckdb.DuckDBPyConnection, export: DailyExport, view: str, target: Path, days: list[date]
) -> None:
    """One partitioned COPY of the given days, then each day's file moved to ``<day>.parquet``.

    DuckDB writes ``<dir>/_export_day=<day>/data_0.parquet`` without the partition column; the
    folder is private to this build, so the rename cannot meet a reader.
    """
    staging = target / "_copy"
    con.execute("create or replace temp table _export_days (day date)")
    con.executemany("insert into _export_days values (?)", [(d,) for d in days])
    query = (
        f"select * exclude ({LOAD_COLUMN}) from {view} "
        f"where {DAY_COLUMN} in (select day from _export_days) "
        f"order by {DAY_COLUMN}, {export.order_by}"
    )
    # COPY takes no parameters for its target: the path goes in as a DuckDB string literal.
    con.execute(
        f"copy ({query}) to {sql_literal(staging)} (format parquet, partition_by ({DAY_COLUMN}))"
    )
    for day in days:
        parts = sorted((staging / f"{DAY_COLUMN}={day.isoformat()}").glob("*.parquet"))
        if len(parts) != 1:  # DuckDB's layout changed: fail the build, keep the live exports
            raise RankflowError(f"export {export.name}: expected one file for {day}, found {parts}")
        os.replace(parts[0], day_file(target, day))
    shutil.rmtree(staging)


def _write_empty(con: duckdb.DuckDBPyConnection, view: str, path: Path) -> None:
    table = con.execute(f"select * exclude ({DAY_COLUMN}, {LOAD_COLUMN}) from {view} limit 0")
    pq.write_table(table.fetch_arrow_table(), path)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links here (another device, a file system without them)
        shutil.copy2(source, target)


def sql_literal(value: object) -> str:
    """``value`` as a DuckDB string literal, for the few statements that take no parameters
    (view definitions, COPY targets). DuckDB's only escape inside '...' is a doubled quote (no
    backslash escapes), so the result can never end the literal early; NUL cannot be
    represented."""
    text = str(value)
    if "\x00" in text:
        raise RankflowError(f"a NUL character cannot be part of a SQL string: {text!r}")
    return "'" + text.replace("'", "''") + "'"
