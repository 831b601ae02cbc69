"""Load the listed raw files into the build database, for dbt's ``raw`` source.

dbt never reads the raw folder itself: this module copies exactly the files
``rankflow.data.raw_files.list_raw`` listed (and, for impressions, only the partitions the
build reloads) into the tables ``raw.users``, ``raw.items`` and ``raw.impressions`` of the
build database. Paths go to DuckDB as arguments of its Python API, never inside SQL text, so a
folder name with a quote, a space or a semicolon is just a name.

The tables have the contract's column types (``rankflow.data.contract.CONTRACT``) plus
``filename`` and ``file_row_number`` (the file order that breaks ties between duplicates) and,
for impressions, the partition day ``event_date``. Values were checked castable by the contract
check before this runs. ``raw.impressions`` is emptied after the build: its rows live on in
``stg_impressions``, and a second copy would double the warehouse file.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from rankflow.data.contract import CONTRACT, PARTITION_KEY
from rankflow.data.raw_files import RawListing

RAW_SCHEMA = "raw"


def create_raw_tables(
    con: duckdb.DuckDBPyConnection, tables: Iterable[str] = tuple(CONTRACT)
) -> None:
    """(Re)create the empty raw ``tables`` (default: all) with the contract's types."""
    con.execute(f"create schema if not exists {RAW_SCHEMA}")
    for table in tables:
        columns = CONTRACT[table]
        cols = [f'"{name}" {spec.sql_type}' for name, spec in columns.items()]
        if table == "impressions":
            cols.append(f'"{PARTITION_KEY}" DATE')
        cols += ['"filename" VARCHAR', '"file_row_number" BIGINT']
        con.execute(f'create or replace table {RAW_SCHEMA}."{table}" ({", ".join(cols)})')


def load_files(con: duckdb.DuckDBPyConnection, table: str, files: Iterable[Path]) -> None:
    """Append ``files`` to ``raw.<table>``."""
    files = [str(p) for p in files]
    if not files:
        return
    relation = con.read_parquet(
        files,
        filename=True,
        file_row_number=True,
        union_by_name=True,
        hive_partitioning=(table == "impressions"),
    )
    columns = [*CONTRACT[table], "filename", "file_row_number"]
    if table == "impressions":
        columns.append(PARTITION_KEY)
    # Identifiers are the contract's own column names, not user input.
    selected = relation.project(", ".join(f'"{name}"' for name in columns))
    con.register("_rankflow_raw_batch", selected)
    try:
        con.execute(f'insert into {RAW_SCHEMA}."{table}" by name select * from _rankflow_raw_batch')
    finally:
        con.unregister("_rankflow_raw_batch")


def load_build_inputs(
    con: duckdb.DuckDBPyConnection, listing: RawListing, days: Iterable[date] | None
) -> None:
    """Fresh raw tables holding users, items and the impressions of ``days`` (None: a full
    build: every day).

    An incremental build (``days`` given) keeps ``raw.users`` and ``raw.items`` as the previous
    build loaded them: the plan only builds incrementally when their files are byte-identical
    to the manifest's (rankflow.warehouse.changes), so reloading them would change nothing.
    """
    if days is None:
        create_raw_tables(con)
        load_files(con, "users", listing.files["users"])
        load_files(con, "items", listing.files["items"])
    else:
        create_raw_tables(con, ["impressions"])
    load_days(con, listing, days)


def load_days(
    con: duckdb.DuckDBPyConnection, listing: RawListing, days: Iterable[date] | None
) -> None:
    """Append the impressions files of ``days`` (None: every partition) to ``raw.impressions``."""
    wanted = (
        listing.partitions if days is None else {d: listing.partitions.get(d, []) for d in days}
    )
    load_files(con, "impressions", [path for files in wanted.values() for path in files])


def empty_impressions(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the loaded impressions rows (they live on in ``stg_impressions``)."""
    con.execute(f'delete from {RAW_SCHEMA}."impressions"')


def write_raw(
    raw_dir: Path,
    users: pd.DataFrame,
    items: pd.DataFrame,
    impressions: pd.DataFrame,
    *,
    file_name: str = "part-0.parquet",
) -> None:
    """Write small raw tables in the contract layout (docs/data-contract.md), for tests and demos.

    Impressions go to ``impressions/event_date=YYYY-MM-DD/<file_name>`` by the UTC day of ``ts``
    (pass an ``event_date`` column to force a partition, e.g. to test a misplaced row); an
    existing partition file of the same name is replaced, like a rewritten day.
    """
    raw_dir = Path(raw_dir)
    for name, frame in (("users", users), ("items", items)):
        (raw_dir / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(raw_dir / name / file_name, index=False)
    frame = impressions.copy()
    if "event_date" in frame.columns:
        days = pd.to_datetime(frame.pop("event_date")).dt.date
    else:
        days = pd.to_datetime(frame["ts"], utc=True).dt.date
    for day, part in frame.groupby(days, sort=True):
        folder = raw_dir / "impressions" / f"event_date={_iso(day)}"
        folder.mkdir(parents=True, exist_ok=True)
        part.to_parquet(folder / file_name, index=False)


def _iso(day: object) -> str:
    return day.isoformat() if isinstance(day, date) else str(day)
