"""The day-grain history outside the DuckDB file: which days a build carries over, and the views.

Six models (``HISTORY_MODELS``) keep their rows as one parquet folder per day under
``warehouse/history/<model>/<day column>=YYYY-MM-DD/`` plus a ``_schema`` folder (a file with no
rows, so a model without rows still reads), and the database holds a view over each
(``dbt_project/macros/day_partitioned.sql``). Why: the build runs on a copy of the database
file (all or nothing), and with the history inside the file that copy, the deletes and the
appends made every daily build cost more the longer the history (docs/benchmarks.md).

A build's history folder is made like its exports folder: every day the build keeps is a hard
link to the live file (a copy where the file system has no links), the days it redoes are left
out, and dbt writes those under file names carrying its invocation id, so no live file is
ever written into. After a good build the folder is swapped in with the database and the views
are pointed at the live folder (``rankflow.warehouse.scratch.swap_in``).

Which days are redone: the reloaded partition days for the impression-grain models, and for the
daily feature marts every feature day a reloaded day feeds plus the days between the previous
and the new feature cutoff (``feature_redo_days``; dbt's ``changed_feature_days`` reads the
same days from ``_rankflow.redo_feature_days``, so the two cannot disagree).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import duckdb
import yaml

from rankflow.errors import RankflowError
from rankflow.warehouse.exports import link_or_copy, sql_literal

# model -> its day column (the partition folders' name)
IMPRESSION_MODELS = ("stg_impressions", "fct_labelled_impressions", "quarantined_impressions")
FEATURE_MODELS = ("user_daily_features", "item_daily_features", "user_category_daily_features")
HISTORY_MODELS: dict[str, str] = {
    **dict.fromkeys(IMPRESSION_MODELS, "event_date"),
    **dict.fromkeys(FEATURE_MODELS, "feature_date"),
}
SCHEMA_FOLDER = "_schema"
WRITTEN_FOLDER = "_written"  # this build's marker file (dbt_project/macros/day_partitioned.sql)
STATE_SCHEMA = "_rankflow"


class HistoryError(RankflowError, RuntimeError):
    """The history folder is not what the build expects (the live warehouse is left as it was)."""


def max_feature_window(project_dir: Path, dbt_vars: dict[str, object]) -> int:
    """The ``max_feature_window`` dbt var: the build's vars, else dbt_project.yml's default."""
    if "max_feature_window" in dbt_vars:
        return int(str(dbt_vars["max_feature_window"]))
    project = yaml.safe_load((project_dir / "dbt_project.yml").read_text())
    return int(project["vars"]["max_feature_window"])


def feature_redo_days(
    reload_days: Iterable[date], old_cutoff: date | None, new_cutoff: date | None, window: int
) -> set[date]:
    """The feature days an incremental build recomputes: each reloaded day feeds the feature
    days ``day + 1 .. day + window``; and when the cutoff (newest raw day not after "now")
    moves, the rows of the days ``min + 2 .. max + 1`` start or stop existing."""
    days = {day + timedelta(days=k) for day in reload_days for k in range(1, window + 1)}
    if old_cutoff is not None and new_cutoff is not None:
        low, high = min(old_cutoff, new_cutoff), max(old_cutoff, new_cutoff)
        days |= {low + timedelta(days=k) for k in range(2, (high - low).days + 2)}
    return days


def day_folders(model_dir: Path) -> dict[date, Path]:
    """The day folders of one model's history (``<column>=YYYY-MM-DD``), by day."""
    found: dict[date, Path] = {}
    if not model_dir.is_dir():
        return found
    for entry in model_dir.iterdir():
        name, sep, value = entry.name.partition("=")
        if sep and name == HISTORY_MODELS.get(model_dir.name):
            found[date.fromisoformat(value)] = entry
    return found


def carry_over(live_root: Path, build_root: Path, redo: dict[str, set[date]]) -> dict[str, int]:
    """Link every live day of each model that is not in ``redo[model]`` (and the schema file)
    into the build's history folder. Returns the days carried over per model."""
    kept: dict[str, int] = {}
    for model in HISTORY_MODELS:
        live, build = live_root / model, build_root / model
        schema = live / SCHEMA_FOLDER
        if not schema.is_dir():
            raise HistoryError(f"{schema} is missing: the live history is incomplete")
        build.mkdir(parents=True)
        _link_folder(schema, build / SCHEMA_FOLDER)
        days = day_folders(live)
        for day, folder in days.items():
            if day not in redo.get(model, set()):
                _link_folder(folder, build / folder.name)
        kept[model] = len(days.keys() - redo.get(model, set()))
    return kept


def missing_models(live_root: Path) -> list[str]:
    """Models whose live history (or its schema file) is missing: the build must be full."""
    return [m for m in HISTORY_MODELS if not (live_root / m / SCHEMA_FOLDER).is_dir()]


def _link_folder(source: Path, target: Path) -> None:
    target.mkdir()
    for file in source.iterdir():
        link_or_copy(file, target / file.name)


def point_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """(Re)create each history model's view over the history folder ``root``.

    The same statement as the materialization's; a view cannot take parameters, so the path
    goes in as a DuckDB string literal.
    """
    for model in HISTORY_MODELS:
        files = sql_literal(root / model / "*" / "*.parquet")
        con.execute(
            f'create or replace view main."{model}" as '
            f"select * from read_parquet({files}, hive_partitioning = false)"
        )


def kept_impression_days(build_root: Path) -> set[date]:
    """The days of staged impressions the build carried over (each has at least one row)."""
    return set(day_folders(build_root / "stg_impressions"))


def write_redo_feature_days(con: duckdb.DuckDBPyConnection, days: set[date]) -> None:
    con.execute(f"create schema if not exists {STATE_SCHEMA}")
    con.execute(f"create or replace table {STATE_SCHEMA}.redo_feature_days (feature_date date)")
    if days:
        con.executemany(
            f"insert into {STATE_SCHEMA}.redo_feature_days values (?)", [(d,) for d in sorted(days)]
        )


def finish_build(build_root: Path, invocation: str, redo: dict[str, set[date]]) -> None:
    """After a good dbt build: check what was written (``check_written``) and drop the marker
    files the build's own tests read (``_written``, no rows), which the live history keeps no
    use for."""
    check_written(build_root, invocation, redo)
    for model in HISTORY_MODELS:
        shutil.rmtree(build_root / model / WRITTEN_FOLDER, ignore_errors=True)


def check_written(build_root: Path, invocation: str, redo: dict[str, set[date]]) -> None:
    """After dbt: no day folder mixes files this build wrote with carried-over ones, and every
    day this build wrote is one it meant to redo. Either would mean a kept day was written
    again (its rows twice); the build fails and the live warehouse stays."""
    for model in HISTORY_MODELS:
        for day, folder in day_folders(build_root / model).items():
            names = [f.name for f in folder.iterdir()]
            ours = [n for n in names if n.startswith(f"{invocation}_")]
            if ours and (len(ours) != len(names) or day not in redo.get(model, {day})):
                raise HistoryError(
                    f"history {model} day {day}: written by this build but also carried over "
                    f"({sorted(names)}); live warehouse unchanged"
                )


def prepare_incremental(
    con: duckdb.DuckDBPyConnection,
    reload_days: set[date],
    old_cutoff: date | None,
    as_of_day: date,
    live_root: Path,
    build_root: Path,
    window: int,
) -> tuple[dict[str, set[date]], date | None]:
    """Before dbt, on an incremental build whose raw impressions are loaded: decide the days
    each model redoes, carry the others over into ``build_root``, point the views there and
    hand the feature days to dbt. Returns the days redone per model and the new feature cutoff.

    The cutoff is dbt's ``feature_cutoff()`` computed ahead: the newest day of staged
    impressions not after "now"; staged days are the kept days (a folder exists only for a day
    with rows) and the loaded ones. ``check_cutoff`` compares the two after dbt.
    """
    kept = set(day_folders(live_root / "stg_impressions")) - reload_days
    loaded = {
        row[0]
        for row in con.execute(
            "select distinct cast(event_date as date) from raw.impressions"
        ).fetchall()
    }
    new_cutoff = max((d for d in kept | loaded if d <= as_of_day), default=None)
    feature_days = feature_redo_days(reload_days, old_cutoff, new_cutoff, window)
    redo = {
        **{m: set(reload_days) for m in IMPRESSION_MODELS},
        **{m: set(feature_days) for m in FEATURE_MODELS},
    }
    carry_over(live_root, build_root, redo)
    point_views(con, build_root)
    write_redo_feature_days(con, feature_days)
    return redo, new_cutoff


def check_cutoff(expected: date | None, built: date | None) -> None:
    """The cutoff the carried-over days were chosen by must be the one dbt cut the marts at."""
    if expected != built:
        raise HistoryError(
            f"the feature cutoff dbt built ({built}) differs from the one the history was "
            f"prepared for ({expected}); live warehouse unchanged"
        )
