"""Build the DuckDB warehouse and the Feast exports with dbt, all or nothing, incrementally.

``build_warehouse`` first runs the contract check on exactly the raw files
``rankflow.data.raw_files.list_raw`` lists, then plans the work by content
(``rankflow.warehouse.changes``: which partition days were added, rewritten or removed since
the manifest of the previous build), loads those files into the build database
(``rankflow.warehouse.raw_load``) and runs ``dbt build`` (models, data tests and unit tests of
``dbt_project/``) against a *copy* of the live warehouse file and into a *fresh* exports folder.
Only when every node succeeded are the two swapped over the live ones by renames; a failed
build raises ``WarehouseBuildError`` naming the failed nodes and leaves the live warehouse and
exports byte-identical. The live warehouse file is never opened for writing: readers (Feast,
notebooks, ``rankflow.warehouse.docs``) can use it while a build runs.

The guarantee (docs/data-contract.md): after any sequence of raw changes, an incremental build
holds the same rows in every table and export as a ``full_refresh`` build of the same raw data
and ``as_of`` (the lineage columns ``_load_id``, ``_loaded_at`` and ``created_ts`` aside).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow.parquet as pq

from rankflow.data.contract import validate_raw
from rankflow.data.raw_files import list_raw
from rankflow.errors import RankflowError
from rankflow.locks import warehouse_lock
from rankflow.paths import StatePaths
from rankflow.times import as_utc
from rankflow.warehouse import changes, raw_load, scratch
from rankflow.warehouse.dbt_runner import (
    DBT_PROJECT_DIR,
    NodeFailure,
    dbt_common_args,
    dbt_log_file,
    dbt_path_vars,
    failures,
    invocation_id,
    invoke_dbt,
    summary_line,
)
from rankflow.warehouse.exports import ATTRIBUTE_EXPORTS as EXPORT_MODELS
from rankflow.warehouse.exports import (
    DAILY_EXPORTS,
    write_daily_exports,
)
from rankflow.warehouse.raw_load import write_raw as write_raw  # re-export for tests, demos
from rankflow.warehouse.rebuilt import record_rebuilt
from rankflow.warehouse.result import Stopwatch, WarehouseResult

if TYPE_CHECKING:  # dbt is imported lazily: it is slow to import and only needed to build
    from dbt.cli.main import dbtRunnerResult

    from rankflow.data.raw_files import RawListing

# What an incremental build leaves out of `dbt build`, because it cannot change there:
# - dbt unit tests check the SQL against fixed rows, not the data: they change only with the
#   project, and a changed project forces a full build;
# - the attribute branch (tag `attributes`: users, items, their dims and exports) and the source
#   tests on raw users / items: a change in users/ or items/ forces a full build too. Their
#   tables stay as the copied warehouse holds them, and the export files are carried over.
#   `cautious` keeps the tests that join a daily model to a dim (relationships), which check
#   this build's new rows against the kept dims.
INCREMENTAL_EXCLUDES = [
    "--exclude-resource-type",
    "unit_test",
    "--exclude",
    "tag:attributes",
    "source:raw.users",
    "source:raw.items",
    "--indirect-selection",
    "cautious",
]
# export model -> the folder of per-day files rankflow.warehouse.exports writes from its view
DAILY_EXPORT_MODELS: dict[str, str] = {e.model: e.name for e in DAILY_EXPORTS}


class WarehouseError(RankflowError, RuntimeError):
    """A warehouse operation (build or docs) that did not complete."""


class WarehouseBuildError(WarehouseError):
    """``dbt build`` failed; the live warehouse and exports were left untouched."""

    def __init__(self, message: str, failures: list[NodeFailure] | None = None) -> None:
        super().__init__(message)
        self.failures: list[NodeFailure] = failures or []


def build_warehouse(
    paths: StatePaths,
    *,
    as_of: datetime | None = None,
    full_refresh: bool = False,
    vars: dict[str, Any] | None = None,
    raw_dir: Path | None = None,
) -> WarehouseResult:
    """Check the raw data, then build (or incrementally update) the warehouse and exports; swap
    them in only on success.

    ``as_of`` is "now" for the future-timestamp rule (default: the call's start, UTC; a naive
    value is read as UTC). ``vars`` are dbt vars (``ctr_prior``, ``ctr_prior_strength``,
    ``lookback_days``) overriding ``dbt_project.yml``. ``raw_dir`` defaults to ``paths.raw``.
    ``full_refresh`` rebuilds everything; otherwise only the days whose raw files changed (plus
    the lookback and the days the future-timestamp rule may judge differently) are rebuilt.
    Raises ``ContractError`` (nothing built) when the raw data breaks the contract.
    """
    started = time.perf_counter()
    as_of = as_utc(as_of or datetime.now(UTC))
    raw_dir = Path(raw_dir or paths.raw).resolve()
    _check_raw_dir(raw_dir)
    clock = Stopwatch()
    built = _build_and_swap(paths, raw_dir, as_of, dict(vars or {}), full_refresh, clock)
    plan = built.plan
    base = WarehouseResult(
        warehouse_path=paths.warehouse,
        exports_dir=paths.exports,
        raw_dir=raw_dir,
        as_of=as_of,
        full_refresh=plan.full,
        invocation_id=built.invocation_id,
        row_counts=built.row_counts,
        quarantine_counts=built.quarantine,
        exports=built.exports,
        run_summary={},
        dbt_summary=summary_line("build", built.run, dbt_log_file(paths)),
        dbt_target_dir=paths.dbt / "target",
        plan=plan.describe(),
        skipped=list(plan.skipped),
        decoded=list(plan.decoded),
        phases={k: round(v, 3) for k, v in clock.phases.items()},
    )
    return _with_run(base, built.run, round(time.perf_counter() - started, 2))


@dataclass(frozen=True)
class _Built:
    """What one build swapped in: its plan, dbt's run, and what it counted and wrote."""

    plan: changes.BuildPlan
    run: dbtRunnerResult
    invocation_id: str
    row_counts: dict[str, int]
    quarantine: dict[str, int]
    exports: dict[str, Path]


def _build_and_swap(
    paths: StatePaths,
    raw_dir: Path,
    as_of: datetime,
    vars: dict[str, Any],
    full_refresh: bool,
    clock: Stopwatch,
) -> _Built:
    """Under the warehouse lock: build in a scratch copy, check it, swap it in on success."""
    dbt_vars = {**vars, "as_of": ""}  # "now" goes to dbt as a table: see write_plan_tables
    live_db, live_exports = paths.warehouse, paths.exports
    live_db.parent.mkdir(parents=True, exist_ok=True)
    with warehouse_lock(paths):
        build_dir, build_db, build_exports = scratch.fresh_scratch(paths)
        safety_copy: scratch.SafetyCopy | None = None
        try:
            _refuse_open_live_db(live_db)
            safety_copy = _safety_copy(live_db, build_db, full_refresh, clock)
            missing = scratch.attribute_exports_missing(live_exports)
            force_full = f"live exports lack {', '.join(missing)}" if missing else None
            plan = _prepare(build_db, raw_dir, as_of, vars, full_refresh, clock, force_full)
            if not plan.full:
                scratch.carry_attribute_exports(live_exports, build_exports)
            with clock.step("dbt"):
                run = invoke_dbt(_dbt_build_args(paths, dbt_vars, build_db, build_exports, plan))
            found = failures(run)
            if found or not run.success:
                raise _build_error(run, found)
            build_id = invocation_id()
            with clock.step("exports"):
                written = _finish(build_db, plan, as_of, build_exports, live_exports, build_id)
            with clock.step("counts"):
                row_counts, quarantine = _inspect_build_db(build_db, build_exports, written)
            exports = _export_paths(live_exports)
            _check_written(build_exports)
            with clock.step("swap"):
                scratch.swap_in(build_db, live_db, build_exports, live_exports)
            # The online store must reload these days (rankflow.warehouse.rebuilt says why).
            record_rebuilt(paths, plan.reload_days | plan.changed_days)
        finally:
            if safety_copy is not None:
                safety_copy.join()
            shutil.rmtree(build_dir, ignore_errors=True)
            shutil.rmtree(build_exports, ignore_errors=True)
    return _Built(plan, run, build_id, row_counts, quarantine, exports)


def trusted_raw_files(
    paths: StatePaths, *, vars: dict[str, Any] | None = None, raw_dir: Path | None = None
) -> list[Path]:
    """The raw files a contract check outside a build may trust (footers only, no values): those
    the live warehouse's manifest records unchanged, under the settings ``build_warehouse``
    would use for the same arguments (``changes.trusted_by_manifest``)."""
    raw_dir = Path(raw_dir or paths.raw).resolve()
    key = _settings_key(dict(vars or {}), raw_dir)
    return changes.trusted_by_manifest(paths.warehouse, raw_dir, key)


def _settings_key(vars: dict[str, Any], raw_dir: Path) -> str:
    return changes.settings_key(DBT_PROJECT_DIR, vars, raw_dir)


def _safety_copy(
    live_db: Path, build_db: Path, full_refresh: bool, clock: Stopwatch
) -> scratch.SafetyCopy | None:
    """The live database copied for an incremental build (none for a full one)."""
    if not live_db.exists() or full_refresh:
        return None
    with clock.step("copy"):
        return scratch.SafetyCopy(live_db, build_db)


def _check_written(build_exports: Path) -> None:
    missing = [f for f in EXPORT_MODELS.values() if not (build_exports / f).is_file()]
    if missing:
        raise WarehouseBuildError(
            f"dbt build succeeded but did not write {missing} into {build_exports}"
        )


def _dbt_build_args(
    paths: StatePaths,
    dbt_vars: dict[str, Any],
    build_db: Path,
    build_exports: Path,
    plan: changes.BuildPlan,
) -> list[str]:
    """``dbt build`` against the build database: everything on a full build, else without the
    nodes an incremental build cannot change (``INCREMENTAL_EXCLUDES``)."""
    dbt_vars = {**dbt_vars, **dbt_path_vars(build_db, build_exports)}
    args = ["build", *dbt_common_args(paths, "target"), "--vars", json.dumps(dbt_vars)]
    return [*args, "--full-refresh"] if plan.full else [*args, *INCREMENTAL_EXCLUDES]


def _export_paths(live_exports: Path) -> dict[str, Path]:
    """Export name -> its live file (attribute exports) or folder of per-day files."""
    return {
        **{Path(f).stem: live_exports / f for f in EXPORT_MODELS.values()},
        **{name: live_exports / name for name in DAILY_EXPORT_MODELS.values()},
    }


def _with_run(result: WarehouseResult, run: dbtRunnerResult, elapsed: float) -> WarehouseResult:
    """The result with dbt's node counts, its warnings and the elapsed time filled in."""
    from dataclasses import replace

    results = run.result.results
    return replace(
        result,
        run_summary=dict(Counter(str(r.status) for r in results)),
        warnings=[f"{r.node.unique_id}: {r.message}" for r in results if str(r.status) == "warn"],
        elapsed_seconds=elapsed,
    )


def _prepare(
    build_db: Path,
    raw_dir: Path,
    as_of: datetime,
    vars: dict[str, Any],
    full_refresh: bool,
    clock: Stopwatch,
    force_full: str | None = None,
) -> changes.BuildPlan:
    """Contract check, change plan and raw load into the build database, before dbt runs.

    Reads the previous build's manifest from the copy (none on a full refresh: the copy was not
    made), validates every listed file and decodes the new or rewritten ones page by page, then
    loads users, items and the impressions of the days to reload.
    """
    fresh = full_refresh or not build_db.exists()
    con = _connect(build_db)
    try:
        previous = None if fresh else changes.read_state(con)
        with clock.step("scan"):
            listing = list_raw(raw_dir)
            entries = changes.scan(listing, previous)
        plan = changes.plan_build(
            previous,
            entries,
            raw_dir=raw_dir,
            as_of=as_of.replace(tzinfo=None),
            key=_settings_key(vars, raw_dir),
            lookback_days=int(vars.get("lookback_days", 1)),
            full_refresh=full_refresh,
            force_full=force_full,
        )
        with clock.step("contract"):
            # Files the manifest knows with the same content passed the contract then: only
            # their footers are read again, not their values.
            inventory = validate_raw(raw_dir, deep=plan.changed_files, trusted=plan.unchanged_files)
        plan.as_of = as_of.replace(tzinfo=None)
        plan.skipped = inventory.skipped
        plan.decoded = inventory.decoded
        if plan.full:
            plan.reload_days = set(listing.partitions)
            con.close()
            build_db.unlink(missing_ok=True)  # a full build starts from an empty database
            con = _connect(build_db)
        with clock.step("load"):
            _load(con, listing, plan, previous)
    finally:
        con.close()
    return plan


def _load(
    con: duckdb.DuckDBPyConnection,
    listing: RawListing,
    plan: changes.BuildPlan,
    previous: changes.BuildState | None,
) -> None:
    """Load the raw tables and hand the plan to dbt; widen it by days sharing event ids."""
    as_of = plan.as_of
    raw_load.load_build_inputs(con, listing, None if plan.full else plan.reload_days)
    changes.write_plan_tables(con, plan, previous, as_of)
    if not plan.full:
        extra = changes.duplicate_days(con, plan.reload_days)
        if extra:
            raw_load.load_days(con, listing, extra)
            plan.reload_days |= extra
            changes.write_plan_tables(con, plan, previous, as_of)
    if plan.full:
        con.execute("checkpoint")
    else:
        # No checkpoint here: its fsync of the database file would wait for every page of the
        # safety copy (scratch.SafetyCopy). The loaded rows stay in the write-ahead log, which
        # dbt's connection replays; their commit waits only for what the copy's background
        # write-back has not yet done (docs/benchmarks.md, "Interleaved rounds").
        con.execute("pragma disable_checkpoint_on_shutdown")


def _finish(
    build_db: Path,
    plan: changes.BuildPlan,
    as_of: datetime,
    build_exports: Path,
    live_exports: Path,
    build_id: str,
) -> dict[str, int]:
    """After a good dbt build: write the per-day exports (only the days this build redid; the
    rest are linked from the live folder), record the manifest, drop the loaded impressions.
    Returns the rows of each per-day export (by its model)."""
    con = _connect(build_db)
    try:
        writes = write_daily_exports(con, build_exports, live_exports, build_id, plan.full)
        as_of_naive = as_of.replace(tzinfo=None)
        newest = con.execute(
            "select max(event_date) from main.stg_impressions where event_date <= ?",
            [as_of_naive.date()],
        ).fetchall()[0][0]
        changes.write_state(con, plan, as_of_naive, newest)
        changes.write_event_keys(con, plan.full)
        raw_load.empty_impressions(con)
        con.execute("checkpoint")
    finally:
        con.close()
    models = {e.name: e.model for e in DAILY_EXPORTS}
    return {models[w.name]: w.rows for w in writes}


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("set TimeZone = 'UTC'")  # naive raw timestamps are UTC (the contract's rule)
    return con


def _refuse_open_live_db(live_db: Path) -> None:
    live_wal = live_db.with_name(live_db.name + ".wal")
    if live_wal.exists():
        # someone has the live file open for writing (or crashed doing so): copying it
        # would miss their changes, and the log would replay onto the new file
        raise WarehouseBuildError(
            f"{live_wal} exists: another process has the live warehouse open read-write "
            "(or crashed with it open); close it, or open and close it once to checkpoint"
        )


# --- after a good build: inspect, swap -----------------------------------------------------


def _inspect_build_db(
    build_db: Path, build_exports: Path, daily_rows: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Row counts per relation and quarantine counts. The attribute exports count the rows in
    the written file; the per-day exports the rows their writer wrote or carried over
    (``daily_rows``; reading every day file's footer again made this step grow with the history)."""
    con = duckdb.connect(str(build_db), read_only=True)
    try:
        tables = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'main' order by table_name"
            ).fetchall()
        ]
        row_counts = {}
        for table in tables:
            if table in EXPORT_MODELS:
                path = build_exports / EXPORT_MODELS[table]
                row_counts[table] = pq.read_metadata(path).num_rows
            elif table in DAILY_EXPORT_MODELS:
                row_counts[table] = daily_rows[table]
            else:
                sql = f"select count(*) from main.{scratch.identifier(table)}"
                row_counts[table] = int(con.execute(sql).fetchall()[0][0])
        quarantine = con.execute(
            "select reason, count(*) from main.quarantined_impressions group by reason"
        ).fetchall()
    finally:
        con.close()
    return row_counts, {str(reason): int(n) for reason, n in quarantine}


def _build_error(run: dbtRunnerResult, found: list[NodeFailure]) -> WarehouseBuildError:
    if not found:
        reason = run.exception or "dbt reported failure without a failed node"
        return WarehouseBuildError(
            f"dbt build failed before running models: {reason}; live warehouse unchanged"
        )
    skipped = sum(str(r.status) == "skipped" for r in run.result.results)
    lines = [
        f"dbt build failed: {len(found)} node(s) failed, {skipped} skipped; "
        "live warehouse and exports unchanged"
    ]
    lines += [f"  - {f.describe()}" for f in found[:10]]
    if len(found) > 10:
        lines.append(f"  ... and {len(found) - 10} more")
    return WarehouseBuildError("; ".join(lines), found)


# --- small helpers ------------------------------------------------------------------------------


def _check_raw_dir(raw_dir: Path) -> None:
    missing = [t for t in ("users", "items", "impressions") if not (raw_dir / t).is_dir()]
    if missing:
        raise WarehouseBuildError(
            f"raw data folder {raw_dir} lacks {', '.join(f'{t}/' for t in missing)} "
            "(see docs/data-contract.md); live warehouse unchanged"
        )
