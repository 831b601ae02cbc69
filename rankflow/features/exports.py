"""The dbt parquet exports Feast reads (``<state>/exports/``): their schemas and checks.

``feast apply`` and the training set check an export before they use it, so a missing file or
a column of the wrong type is an error naming the file and the column, not a Feast traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models import schema
from rankflow.features.errors import FeatureStoreError
from rankflow.paths import StatePaths
from rankflow.times import as_utc
from rankflow.warehouse.exports import DAILY_EXPORTS


class ExportError(FeatureStoreError):
    """A dbt parquet export is missing or does not match the schema below; names file and column."""


# --------------------------------------------------------------------------------------------
# The dbt parquet exports Feast reads (written by dbt_project to $RANKFLOW_HOME/exports/).
# These are the canonical Arrow types; check_exports() accepts any integer / float width,
# (large_)string, and naive or UTC timestamps of any unit but nanoseconds.
# --------------------------------------------------------------------------------------------

_TS = pa.timestamp("us", tz="UTC")
# Feast value type names (models.schema) -> the Arrow types of the exports.
_ARROW = {"INT64": pa.int64(), "INT32": pa.int32(), "STRING": pa.string(), "FLOAT64": pa.float64()}


def _daily(key_fields: list[tuple[str, pa.DataType]], prefix: str, with_recency: bool) -> pa.Schema:
    counts = [
        (f"{prefix}_{kind}_{window}", pa.int64())
        for kind in ("impressions", "clicks")
        for window in ("1d", "7d", "28d")
    ]
    ctrs = [(f"{prefix}_ctr_7d", pa.float64()), (f"{prefix}_ctr_28d", pa.float64())]
    recency = [(f"{prefix}_days_since_last_click", pa.float64())] if with_recency else []
    return pa.schema(
        [*key_fields, ("feature_ts", _TS), ("created_ts", _TS), *counts, *ctrs, *recency]
    )


EXPORT_SCHEMAS: dict[str, pa.Schema] = {
    "labelled_impressions": pa.schema(
        [
            (schema.EVENT_ID, pa.string()),
            (schema.EVENT_TIMESTAMP, _TS),
            ("event_date", pa.date32()),
            *((name, _ARROW[kind]) for name, kind in schema.ENTITY_SCHEMA.items()),
            (schema.LABEL, _ARROW[schema.LABEL_TYPE]),
        ]
    ),
    "user_attributes": pa.schema(
        [
            ("user_id", pa.int64()),
            ("user_segment", pa.string()),
            ("user_age_bucket", pa.string()),
            ("user_region", pa.string()),
            ("feature_ts", _TS),
            ("created_ts", _TS),
        ]
    ),
    "item_attributes": pa.schema(
        [
            ("item_id", pa.int64()),
            ("item_category", pa.string()),
            ("item_price", pa.float64()),
            ("feature_ts", _TS),
            ("created_ts", _TS),
        ]
    ),
    "user_daily_features": _daily([("user_id", pa.int64())], "user", with_recency=True),
    "item_daily_features": _daily([("item_id", pa.int64())], "item", with_recency=False),
    "user_category_daily_features": pa.schema(
        [
            ("user_id", pa.int64()),
            ("category", pa.string()),
            ("feature_ts", _TS),
            ("created_ts", _TS),
            ("uc_impressions_28d", pa.int64()),
            ("uc_clicks_28d", pa.int64()),
            ("uc_ctr_28d", pa.float64()),
        ]
    ),
}

# The exports behind feature views (labelled_impressions is the entity dataframe instead).
FEATURE_EXPORTS: tuple[str, ...] = (
    "user_attributes",
    "item_attributes",
    "user_daily_features",
    "item_daily_features",
    "user_category_daily_features",
)
_DAILY_EXPORTS = ("user_daily_features", "item_daily_features", "user_category_daily_features")


# Exports written as a folder of one parquet file per day (rankflow.warehouse.exports); the
# others are one file each.
PER_DAY_EXPORTS: frozenset[str] = frozenset(e.name for e in DAILY_EXPORTS)


def export_path(paths: StatePaths, name: str) -> Path:
    """The export's file, or its folder of per-day files (pandas and pyarrow read either)."""
    if name in PER_DAY_EXPORTS:
        return paths.exports / name
    return paths.exports / f"{name}.parquet"


def source_path(paths: StatePaths, name: str) -> str:
    """What the export's Feast ``FileSource`` reads: its file, or a glob over its day files."""
    path = export_path(paths, name)
    return str(path / "*.parquet") if name in PER_DAY_EXPORTS else str(path)


def export_files(paths: StatePaths, name: str) -> list[Path]:
    """The parquet files of an export (one, or one per day); empty when it is missing."""
    path = export_path(paths, name)
    if name in PER_DAY_EXPORTS:
        return sorted(path.glob("*.parquet")) if path.is_dir() else []
    return [path] if path.is_file() else []


def _compatible(actual: pa.DataType, expected: pa.DataType) -> str | None:
    """None if ``actual`` can stand in for ``expected``, else what is wrong with it."""
    if pa.types.is_timestamp(expected):
        if not pa.types.is_timestamp(actual):
            return f"expected a timestamp, found {actual}"
        if actual.tz not in (None, "UTC", "Etc/UTC", "+00:00"):
            return f"expected UTC (or naive UTC) timestamps, found time zone {actual.tz!r}"
        if actual.unit == "ns":
            # DuckDB cannot CAST TIMESTAMPTZ_NS -> TIMESTAMP, which Feast's materialization does.
            return f"found {actual}: write microseconds (pandas: .astype('datetime64[us, UTC]'))"
        return None
    checks = {
        pa.types.is_integer: pa.types.is_integer,
        pa.types.is_floating: lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
        pa.types.is_string: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        pa.types.is_date: pa.types.is_date,
    }
    for is_expected_kind, accepts in checks.items():
        if is_expected_kind(expected):
            return None if accepts(actual) else f"expected {expected}, found {actual}"
    return None if actual.equals(expected) else f"expected {expected}, found {actual}"


def check_export(paths: StatePaths, name: str) -> pa.Schema:
    """Check one export's file and column types against :data:`EXPORT_SCHEMAS`; return its schema.

    Extra columns are allowed. Raises :class:`ExportError` naming the file and every bad column.
    """
    files = export_files(paths, name)
    if not files:
        raise ExportError(
            f"{export_path(paths, name)}: export {name!r} not found; "
            "run the dbt build (`rankflow build`) first"
        )
    # footers only; every per-day file must pass (Feast reads them as one table)
    return [_check_file(path, name) for path in files][-1]


def _check_file(path: Path, name: str) -> pa.Schema:
    expected = EXPORT_SCHEMAS[name]
    try:
        actual = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise ExportError(f"{path}: not a readable parquet file ({error})") from error
    problems = []
    for expected_field in expected:
        index = actual.get_field_index(expected_field.name)
        if index < 0:
            problems.append(f"column {expected_field.name!r} is missing")
            continue
        problem = _compatible(actual.field(index).type, expected_field.type)
        if problem:
            problems.append(f"column {expected_field.name!r}: {problem}")
    if problems:
        raise ExportError(f"{path}: " + "; ".join(problems))
    return actual


def check_exports(paths: StatePaths, names: Sequence[str] = FEATURE_EXPORTS) -> None:
    """Check every named export (default: the feature view sources) before Feast reads them."""
    for name in names:
        check_export(paths, name)


def exports_as_of(paths: StatePaths) -> datetime:
    """The newest ``feature_ts`` over the daily exports: the data's as-of time, in UTC.

    This is the ``end`` to materialize to: the simulated data may be months old, so wall-clock
    time is the wrong end (and the row stamped the midnight after the last raw day is the one a
    scorer should serve next).
    """
    latest: datetime | None = None
    for name in _DAILY_EXPORTS:
        check_export(paths, name)
        column = pq.read_table(export_path(paths, name), columns=["feature_ts"])["feature_ts"]
        value = pc.max(column).as_py()
        if value is not None:
            value = as_utc(value)
            latest = value if latest is None else max(latest, value)
    if latest is None:
        raise ExportError(f"{paths.exports}: the daily feature exports have no rows")
    return latest
