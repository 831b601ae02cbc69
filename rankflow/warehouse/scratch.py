"""The all-or-nothing mechanics of a warehouse build: private scratch paths, the exports an
incremental build carries over, and the swap of the build over the live warehouse and exports.

``rankflow.warehouse.build`` builds into a scratch copy and, only when every step succeeded,
calls ``swap_in``; a failure anywhere leaves the live files as they were.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import duckdb

from rankflow.paths import StatePaths
from rankflow.warehouse.exports import ATTRIBUTE_EXPORTS, link_or_copy, sql_literal
from rankflow.warehouse.history import point_views


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
    build_exports = paths.root / ".exports-build"
    for leftover in (build_dir, build_exports):  # from a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    build_dir.mkdir()
    (build_dir / "history").mkdir()  # the day-grain tables' folder (rankflow.warehouse.history)
    build_exports.mkdir(parents=True)
    return build_dir, build_dir / live_db.name, build_exports


def repoint_views(build_db: Path, live_exports: Path, live_history: Path) -> None:
    """Point the export and history views of the build database at the live folders.

    dbt-duckdb makes each external model a view over the file it wrote, and each day-partitioned
    model a view over the build's history folder: both folders the swap renames away. DuckDB
    binds a view when it is created, so this runs once the new folders are in their live place,
    before the database itself is swapped in.
    """
    con = duckdb.connect(str(build_db))
    try:
        for model, file_name in ATTRIBUTE_EXPORTS.items():
            # A view cannot take parameters: the path goes in as a DuckDB string literal.
            con.execute(
                f"create or replace view main.{identifier(model)} as "
                f"select * from read_parquet({sql_literal(live_exports / file_name)})"
            )
        point_views(con, live_history)
        con.execute("checkpoint")
    finally:
        con.close()


def swap_in(build_db: Path, live_db: Path, folders: list[tuple[Path, Path]]) -> None:
    """Move the build's folders (``(build, live)`` pairs: exports, history) and then its
    database over the live ones by renames, or leave everything as it was.

    Each rename is atomic; the set is not, so any failure undoes the renames done so far.
    """
    done: list[tuple[Path, Path, Path | None]] = []  # (build, live, where the old live went)
    try:
        for build, live in folders:
            old = live.with_name(f".{live.name}-old-{uuid.uuid4().hex[:8]}")
            if live.exists():
                os.rename(live, old)
                done.append((build, live, old))
            else:
                done.append((build, live, None))
            os.rename(build, live)
        live_exports, live_history = (live for _, live in folders)
        repoint_views(build_db, live_exports, live_history)
        os.replace(build_db, live_db)
    except BaseException:
        for build, live, old in reversed(done):
            if not build.exists() and live.exists():
                os.rename(live, build)
            if old is not None:
                os.rename(old, live)
        raise
    for _, _, old in done:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
