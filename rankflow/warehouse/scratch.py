"""The all-or-nothing mechanics of a warehouse build: private scratch paths, the exports an
incremental build carries over, and the swap of the build over the live warehouse and exports.

``rankflow.warehouse.build`` builds into a scratch copy and, only when every step succeeded,
calls ``swap_in``; a failure anywhere leaves the live files as they were.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

import duckdb

from rankflow.paths import StatePaths
from rankflow.warehouse.exports import ATTRIBUTE_EXPORTS, link_or_copy, sql_literal


def identifier(name: str) -> str:
    """``name`` as a quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def carry_attribute_exports(live_exports: Path, build_exports: Path) -> None:
    """Link the live attribute exports into the build's exports folder (an incremental build
    does not rewrite them; ``_prepare`` made the build full if one is missing)."""
    for file_name in ATTRIBUTE_EXPORTS.values():
        link_or_copy(live_exports / file_name, build_exports / file_name)


def attribute_exports_missing(live_exports: Path) -> list[str]:
    return [f for f in ATTRIBUTE_EXPORTS.values() if not (live_exports / f).is_file()]


def fresh_scratch(paths: StatePaths) -> tuple[Path, Path, Path]:
    """Empty scratch folders for one build: (folder, database path, exports folder).

    Fixed paths (the build lock makes them private): dbt's partial parsing keys on the env
    vars, so stable paths let consecutive builds skip a full parse. The database keeps the live
    file's name, in a folder of its own: DuckDB names the database after the file and dbt
    writes that name into every view, so the views keep working after the swap.
    """
    live_db = paths.warehouse
    build_dir = live_db.parent / ".build"
    build_exports = paths.exports_scratch
    for leftover in (build_dir, build_exports):  # from a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    build_dir.mkdir()
    build_exports.mkdir(parents=True)
    return build_dir, build_dir / live_db.name, build_exports


def repoint_export_views(build_db: Path, live_exports: Path) -> None:
    """Point the export views of the build database at the live exports folder.

    dbt-duckdb makes each external model a view over the file it wrote, i.e. over the build
    folder that the swap renames away. DuckDB binds a view when it is created, so this runs
    once the new exports are in their live place, before the database itself is swapped in.
    """
    con = duckdb.connect(str(build_db))
    try:
        for model, file_name in ATTRIBUTE_EXPORTS.items():
            # A view cannot take parameters: the path goes in as a DuckDB string literal.
            con.execute(
                f"create or replace view main.{identifier(model)} as "
                f"select * from read_parquet({sql_literal(live_exports / file_name)})"
            )
        con.execute("checkpoint")
    finally:
        con.close()


def swap_in(build_db: Path, live_db: Path, build_exports: Path, live_exports: Path) -> None:
    """Move the build over the live exports and warehouse by renames, or leave both as they were.

    Each rename is atomic; the pair is not, so any failure after the first undoes it.
    """
    old_exports = live_exports.with_name(f".exports-old-{uuid.uuid4().hex[:8]}")
    had_exports = live_exports.exists()
    if had_exports:
        os.rename(live_exports, old_exports)
    try:
        os.rename(build_exports, live_exports)
        try:
            repoint_export_views(build_db, live_exports)
            os.replace(build_db, live_db)
        except BaseException:
            os.rename(live_exports, build_exports)
            raise
    except BaseException:
        if had_exports:
            os.rename(old_exports, live_exports)
        raise
    if had_exports:
        shutil.rmtree(old_exports, ignore_errors=True)


class SafetyCopy:
    """The live database copied into the scratch folder, flushed to disk in the background.

    A build changes the copy, never the live file, so a failure leaves the good warehouse as it
    was. The copy costs a write of the whole file; on ext4 (no reflinks) writing it back to disk
    was the part of a daily build that grew with the history (0.8 s of fsync at 90 days, inside
    the first checkpoint). A thread starts that write-back at once, so it overlaps the scan and
    the contract check; the build's first commit still waits for the rest (measured 0.5-0.7 s
    of the load step at 90 days; docs/benchmarks.md, "Interleaved rounds"). ``join`` before the
    scratch folder is removed.
    """

    def __init__(self, live_db: Path, build_db: Path) -> None:
        shutil.copy2(live_db, build_db)
        self._thread = threading.Thread(
            target=self._flush, args=(build_db,), name="rankflow-safety-copy-flush", daemon=True
        )
        self._thread.start()

    def _flush(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # nothing lost: the build's own checkpoints fsync the file again, and fail loudly

    def join(self) -> None:
        self._thread.join()
