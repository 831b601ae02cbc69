"""Build the DuckDB warehouse and the Feast exports with dbt, all or nothing.

``build_warehouse`` runs ``dbt build`` (models, data tests and unit tests of ``dbt_project/``)
against a *copy* of the live warehouse file and into a *fresh* exports folder. Only when every
node succeeded are the two swapped over the live ones by renames; a failed build raises
``WarehouseBuildError`` naming the failed nodes and leaves the live warehouse and exports
byte-identical. The live warehouse file is therefore never opened for writing: readers (Feast,
notebooks, ``generate_docs``) can use it while a build runs.

dbt runs in-process through ``dbt.cli.main.dbtRunner``. The paths it needs come from environment
variables that ``dbt_project/profiles.yml`` and the sources read (``RANKFLOW_WAREHOUSE_PATH``,
``RANKFLOW_RAW_DIR``, ``RANKFLOW_EXPORTS_DIR``), so the same project also runs from the dbt CLI.
Setting those variables is process-global: do not run two builds in threads of one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from rankflow.errors import RankflowError
from rankflow.paths import REPO_ROOT, StatePaths

if TYPE_CHECKING:  # dbt is imported lazily: it is slow to import and only needed to build
    from dbt.cli.main import dbtRunnerResult

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

# export model -> parquet file it writes under the exports folder (Feast's FileSources)
EXPORT_MODELS: dict[str, str] = {
    "export_labelled_impressions": "labelled_impressions.parquet",
    "export_user_attributes": "user_attributes.parquet",
    "export_item_attributes": "item_attributes.parquet",
    "export_user_daily_features": "user_daily_features.parquet",
    "export_item_daily_features": "item_daily_features.parquet",
    "export_user_category_daily_features": "user_category_daily_features.parquet",
}

# dbt node statuses that make a build fail ("warn" does not)
_FAILED_STATUSES = {"error", "fail", "runtime error"}


class WarehouseError(RankflowError, RuntimeError):
    """A warehouse operation (build or docs) that did not complete."""


@dataclass(frozen=True)
class NodeFailure:
    """One dbt node that failed, in words a user can act on."""

    unique_id: str
    resource_type: str
    status: str
    message: str
    model: str | None = None  # for data tests: the model (or source) the test is attached to
    column: str | None = None  # for column tests: the column
    compiled_path: str | None = None

    def describe(self) -> str:
        where = ""
        if self.model and self.column:
            where = f" on column {self.column!r} of {self.model}"
        elif self.model:
            where = f" on {self.model}"
        text = f"{self.resource_type} {self.unique_id}{where}: {self.status}: {self.message}"
        if self.compiled_path:
            text += f" (compiled SQL: {self.compiled_path})"
        return text


class WarehouseBuildError(WarehouseError):
    """``dbt build`` failed; the live warehouse and exports were left untouched."""

    def __init__(self, message: str, failures: list[NodeFailure] | None = None) -> None:
        super().__init__(message)
        self.failures: list[NodeFailure] = failures or []


@dataclass(frozen=True)
class WarehouseResult:
    """What a successful build produced."""

    warehouse_path: Path
    exports_dir: Path
    raw_dir: Path
    as_of: datetime
    full_refresh: bool
    invocation_id: str
    row_counts: dict[str, int]
    quarantine_counts: dict[str, int]
    exports: dict[str, Path]
    run_summary: dict[str, int]
    dbt_target_dir: Path  # manifest.json and run_results.json of this build (lineage)
    warnings: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"warehouse {self.warehouse_path} built in {self.elapsed_seconds:.1f} s "
            f"({'full refresh' if self.full_refresh else 'incremental'}, as_of {self.as_of:%Y-%m-%d %H:%M:%S} UTC)",
            "dbt nodes: " + ", ".join(f"{s} {n}" for s, n in sorted(self.run_summary.items())),
            "rows:",
            *(f"  {name:<38} {count:>10}" for name, count in sorted(self.row_counts.items())),
        ]
        if self.quarantine_counts:
            lines.append("quarantined impressions by reason:")
            lines += [f"  {r:<38} {n:>10}" for r, n in sorted(self.quarantine_counts.items())]
        else:
            lines.append("quarantined impressions: none")
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"exports: {self.exports_dir}")
        return "\n".join(lines)


def build_warehouse(
    paths: StatePaths,
    *,
    as_of: datetime | None = None,
    full_refresh: bool = False,
    vars: dict[str, Any] | None = None,
    raw_dir: Path | None = None,
) -> WarehouseResult:
    """Build (or incrementally update) the warehouse and exports; swap them in only on success.

    ``as_of`` is "now" for the future-timestamp rule (default: the call's start, UTC; a naive
    value is read as UTC). ``vars`` are dbt vars (``ctr_prior``, ``ctr_prior_strength``,
    ``lookback_days``) overriding ``dbt_project.yml``. ``raw_dir`` defaults to ``paths.raw``.
    ``full_refresh`` rebuilds everything from the raw files instead of updating the newest days.
    """
    started = time.perf_counter()
    as_of = _as_utc(as_of or datetime.now(UTC))
    raw_dir = Path(raw_dir or paths.raw).resolve()
    _check_raw_dir(raw_dir)
    dbt_vars = {**(vars or {}), "as_of": as_of.strftime("%Y-%m-%d %H:%M:%S.%f")}

    live_db, live_exports = paths.warehouse, paths.exports
    live_db.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(live_db.parent / ".build.lock", "warehouse build"):
        # Fixed scratch paths (the lock makes them private): dbt's partial parsing keys on the
        # env vars, so stable paths let consecutive builds skip a full parse. The database keeps
        # the live file's name, in a folder of its own: DuckDB names the database after the file
        # and dbt writes that name into every view, so the views keep working after the swap.
        build_dir = live_db.parent / ".build"
        build_db = build_dir / live_db.name
        build_exports = paths.root / ".exports-build"
        for leftover in (build_dir, build_exports):  # from a build that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        build_dir.mkdir()
        build_exports.mkdir(parents=True)
        try:
            live_wal = live_db.with_name(live_db.name + ".wal")
            if live_wal.exists():
                # someone has the live file open for writing (or crashed doing so): copying it
                # would miss their changes, and the log would replay onto the new file
                raise WarehouseBuildError(
                    f"{live_wal} exists: another process has the live warehouse open read-write "
                    "(or crashed with it open); close it, or open and close it once to checkpoint"
                )
            if live_db.exists() and not full_refresh:
                shutil.copy2(live_db, build_db)
            env = _dbt_env(build_db, raw_dir, build_exports)
            args = ["build", *_dbt_common_args(paths, "target"), "--vars", json.dumps(dbt_vars)]
            if full_refresh:
                args.append("--full-refresh")
            run = _invoke_dbt(args, env)
            failures = _failures(run)
            if failures or not run.success:
                raise _build_error(run, failures)
            invocation_id = _invocation_id()
            row_counts, quarantine = _inspect_build_db(build_db, build_exports)
            exports = {stem: live_exports / stem for stem in EXPORT_MODELS.values()}
            missing = [f for f in EXPORT_MODELS.values() if not (build_exports / f).is_file()]
            if missing:
                raise WarehouseBuildError(
                    f"dbt build succeeded but did not write {missing} into {build_exports}"
                )
            _swap_in(build_db, live_db, build_exports, live_exports)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
            shutil.rmtree(build_exports, ignore_errors=True)

    statuses = Counter(str(r.status) for r in run.result.results)
    return WarehouseResult(
        warehouse_path=live_db,
        exports_dir=live_exports,
        raw_dir=raw_dir,
        as_of=as_of,
        full_refresh=full_refresh,
        invocation_id=invocation_id,
        row_counts=row_counts,
        quarantine_counts=quarantine,
        exports=exports,
        run_summary=dict(statuses),
        dbt_target_dir=paths.root / "dbt" / "target",
        warnings=[
            f"{r.node.unique_id}: {r.message}"
            for r in run.result.results
            if str(r.status) == "warn"
        ],
        elapsed_seconds=round(time.perf_counter() - started, 2),
    )


def generate_docs(paths: StatePaths, *, raw_dir: Path | None = None) -> Path:
    """Run ``dbt docs generate`` for the live warehouse; return the folder with ``index.html``.

    The catalog is read from a throw-away copy of the live warehouse (dbt-duckdb always opens
    its database read-write, and the live file is only ever replaced, never written in place).
    Serve the result with ``dbt docs serve --target-path <returned folder>`` or open index.html.
    """
    live_db = paths.warehouse
    if not live_db.is_file():
        raise WarehouseError(
            f"no warehouse at {live_db}: build it first (rankflow build / build_warehouse)"
        )
    raw_dir = Path(raw_dir or paths.raw).resolve()
    docs_dir = paths.root / "dbt" / "docs"
    live_db.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(live_db.parent / ".docs.lock", "dbt docs generate"):
        scratch = live_db.parent / ".docs"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            copy = scratch / live_db.name  # same name: the catalog shows the live database name
            shutil.copy2(live_db, copy)
            env = _dbt_env(copy, raw_dir, paths.exports)
            run = _invoke_dbt(["docs", "generate", *_dbt_common_args(paths, "docs")], env)
            if not run.success:
                detail = run.exception or "; ".join(f.describe() for f in _failures(run))
                raise WarehouseError(f"dbt docs generate failed: {detail}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if not (docs_dir / "index.html").is_file():
        raise WarehouseError(f"dbt docs generate wrote no index.html into {docs_dir}")
    return docs_dir


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


# --- dbt invocation -----------------------------------------------------------------------------


def _dbt_env(warehouse: Path, raw_dir: Path, exports_dir: Path) -> dict[str, str]:
    return {
        "RANKFLOW_WAREHOUSE_PATH": str(warehouse),
        "RANKFLOW_RAW_DIR": str(raw_dir),
        "RANKFLOW_EXPORTS_DIR": str(exports_dir),
        # no network: dbt's anonymous usage tracking would try to reach the internet
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def _dbt_common_args(paths: StatePaths, target_name: str) -> list[str]:
    # target/ and logs/ under the state dir, not dbt_project/: the checkout stays clean and two
    # state dirs (tests, engineers) never share partial-parse files or manifests.
    dbt_home = paths.root / "dbt"
    return [
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(dbt_home / target_name),
        "--log-path",
        str(dbt_home / "logs"),
    ]


def _invoke_dbt(args: list[str], env: Mapping[str, str]) -> dbtRunnerResult:
    from dbt.cli.main import dbtRunner

    with _environ(env):
        try:
            return dbtRunner().invoke(args)
        finally:
            _close_dbt_duckdb()


def _close_dbt_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps in a class attribute across invocations.

    dbt-duckdb does not close it when an invocation ends. Left open, the process keeps a handle
    on a file that is about to be renamed or deleted, and our own ``duckdb.connect`` to it fails
    ("Can't open a connection to same database file with a different configuration").
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
            DuckDBConnectionManager._ENV = None


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _failures(run: dbtRunnerResult) -> list[NodeFailure]:
    results = getattr(getattr(run, "result", None), "results", None) or []
    failures = []
    for result in results:
        if str(result.status) not in _FAILED_STATUSES:
            continue
        node = result.node
        model = column = None
        if getattr(node, "attached_node", None):
            model = node.attached_node.split(".")[-1]
        column = getattr(node, "column_name", None) or None
        if getattr(node, "resource_type", None) == "unit_test":
            model = getattr(node, "model", None)
        failures.append(
            NodeFailure(
                unique_id=node.unique_id,
                resource_type=str(node.resource_type),
                status=str(result.status),
                message=(result.message or "").strip(),
                model=model,
                column=column,
                compiled_path=getattr(node, "compiled_path", None),
            )
        )
    return failures


def _build_error(run: dbtRunnerResult, failures: list[NodeFailure]) -> WarehouseBuildError:
    if not failures:
        reason = run.exception or "dbt reported failure without a failed node"
        return WarehouseBuildError(
            f"dbt build failed before running models: {reason}; live warehouse unchanged"
        )
    skipped = sum(str(r.status) == "skipped" for r in run.result.results)
    lines = [
        f"dbt build failed: {len(failures)} node(s) failed, {skipped} skipped; "
        "live warehouse and exports unchanged"
    ]
    lines += [f"  - {f.describe()}" for f in failures[:10]]
    if len(failures) > 10:
        lines.append(f"  ... and {len(failures) - 10} more")
    return WarehouseBuildError("\n".join(lines), failures)


def _invocation_id() -> str:
    """The id of the dbt invocation that just ran: the ``_load_id`` of the rows it wrote."""
    from dbt_common.invocation import get_invocation_id

    return get_invocation_id()


# --- after a good build: inspect, swap -----------------------------------------------------


def _inspect_build_db(build_db: Path, build_exports: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Row counts per relation (exports: rows in the written file) and quarantine counts."""
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
                sql = f"select count(*) from read_parquet('{_sql_str(path)}')"
            else:
                sql = f'select count(*) from main."{table}"'
            row_counts[table] = int(con.execute(sql).fetchone()[0])
        quarantine = con.execute(
            "select reason, count(*) from main.quarantined_impressions group by reason"
        ).fetchall()
    finally:
        con.close()
    return row_counts, {str(reason): int(n) for reason, n in quarantine}


def _repoint_export_views(build_db: Path, live_exports: Path) -> None:
    """Point the export views of the build database at the live exports folder.

    dbt-duckdb makes each external model a view over the file it wrote, i.e. over the build
    folder that the swap renames away. DuckDB binds a view when it is created, so this runs
    once the new exports are in their live place, before the database itself is swapped in.
    """
    con = duckdb.connect(str(build_db))
    try:
        for model, file_name in EXPORT_MODELS.items():
            con.execute(
                f'create or replace view main."{model}" as '
                f"select * from read_parquet('{_sql_str(live_exports / file_name)}')"
            )
        con.execute("checkpoint")
    finally:
        con.close()


def _swap_in(build_db: Path, live_db: Path, build_exports: Path, live_exports: Path) -> None:
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
            _repoint_export_views(build_db, live_exports)
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


@contextlib.contextmanager
def _exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """One `what` per state dir at a time; a second one fails fast instead of racing the first."""
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseBuildError(
                f"another {what} holds {lock_path}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- small helpers ------------------------------------------------------------------------------


def _check_raw_dir(raw_dir: Path) -> None:
    missing = [t for t in ("users", "items", "impressions") if not (raw_dir / t).is_dir()]
    if missing:
        raise WarehouseBuildError(
            f"raw data folder {raw_dir} lacks {', '.join(f'{t}/' for t in missing)} "
            "(see docs/data-contract.md); live warehouse unchanged"
        )


def _as_utc(value: datetime) -> datetime:
    """A naive datetime is UTC (the contract's rule); an aware one is converted to UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _iso(day: object) -> str:
    return day.isoformat() if isinstance(day, date) else str(day)
