"""The Feast feature store behind rankflow: configuration, apply, materialization, lookups.

The feature definitions live in ``feature_repo/`` and are plain Feast: ``feast -c feature_repo
apply`` works with ``RANKFLOW_HOME`` set. This module is the Python door to the same repo, bound
to a :class:`~rankflow.paths.StatePaths` instead of the environment, so that the pipeline, the
tests and a scoring service can each point at their own state directory:

- :func:`get_store` builds a ``FeatureStore`` from ``feature_repo/feature_store.yaml`` (or the
  Redis profile) with ``${RANKFLOW_HOME}`` filled in from ``paths``;
- :func:`apply_feature_repo` runs what ``feast apply`` runs, in process;
- :func:`materialize_incremental` loads the online store up to the data's as-of time;
- :func:`feature_service_schema` and :func:`online_features` serve the models and the scorer.

None of them keeps a store open: every call opens its own and closes the online store's
connection before returning (SQLite allows one writer; a scorer must not hold a stale handle).
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from models import schema
from rankflow.errors import RankflowError
from rankflow.paths import StatePaths
from rankflow.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

# Feast itself is imported inside the functions that use it: importing it takes seconds.

FEATURE_REPO = REPO_ROOT / "feature_repo"
DEFAULT_FEATURE_SERVICE = "ctr_ranker_v1"

Profile = Literal["sqlite", "redis"]
PROFILE_FILES: dict[str, str] = {
    "sqlite": "feature_store.yaml",
    "redis": "feature_store.redis.yaml",
}

# Where a view that was never materialized starts when it has no TTL (attribute views): early
# enough for any signup or item creation, so the first load is complete.
_NO_TTL_START = datetime(1970, 1, 1, tzinfo=UTC)


class FeatureStoreError(RankflowError, RuntimeError):
    """The feature repo, its configuration or its inputs are not usable; the message says why."""


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


def export_path(paths: StatePaths, name: str) -> Path:
    return paths.exports / f"{name}.parquet"


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
    expected = EXPORT_SCHEMAS[name]
    path = export_path(paths, name)
    if not path.is_file():
        raise ExportError(
            f"{path}: export {name!r} not found; run the dbt build (`rankflow build`) first"
        )
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
            value = _as_utc(value)
            latest = value if latest is None else max(latest, value)
    if latest is None:
        raise ExportError(f"{paths.exports}: the daily feature exports have no rows")
    return latest


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


def _settings_for(paths: StatePaths | None, settings: Settings | None) -> Settings:
    """``settings`` bound to ``paths``' state dir (``paths`` wins: it is the explicit argument)."""
    if settings is None:
        settings = Settings.resolve(home=paths.root if paths else None)
    elif paths is not None and paths.root != settings.home:
        settings = settings.replace(home=paths.root)
    return settings


def repo_config(
    paths: StatePaths | None = None,
    *,
    profile: Profile | None = None,
    settings: Settings | None = None,
    repo_path: Path = FEATURE_REPO,
) -> RepoConfig:
    """The ``RepoConfig`` of ``feature_store[.redis].yaml`` for one state dir.

    Mirrors ``feast.repo_config.load_repo_config``, which expands ``${VAR}`` from the process
    environment, but takes the values from :class:`~rankflow.settings.Settings` (state dir,
    Redis address), so it never depends on, nor changes, the caller's environment. ``profile``
    (default ``settings.feast_online_store``) picks the online store.
    """
    from feast import RepoConfig

    settings = _settings_for(paths, settings)
    chosen = profile or settings.feast_online_store
    if chosen not in PROFILE_FILES:
        raise FeatureStoreError(
            f"unknown Feast online store {chosen!r}; expected one of {sorted(PROFILE_FILES)}"
        )
    config_file = repo_path / PROFILE_FILES[chosen]
    variables = {"RANKFLOW_HOME": str(settings.home), "RANKFLOW_REDIS": settings.redis_url}
    rendered = string.Template(config_file.read_text()).safe_substitute(variables)
    try:
        config = RepoConfig(**yaml.safe_load(rendered))
    except Exception as error:  # pydantic's ValidationError and Feast's own config errors
        raise FeatureStoreError(f"{config_file}: invalid Feast configuration: {error}") from error
    config.repo_path = repo_path
    return config


def get_store(
    paths: StatePaths | None = None,
    *,
    profile: Profile | None = None,
    settings: Settings | None = None,
    repo_path: Path = FEATURE_REPO,
) -> FeatureStore:
    """A ``FeatureStore`` over ``feature_repo/`` whose registry and online store live under ``paths``.

    The caller owns the store; prefer :func:`open_store`, which closes its connections.
    """
    from feast import FeatureStore

    settings = _settings_for(paths, settings)
    settings.paths.feast.mkdir(parents=True, exist_ok=True)
    config = repo_config(profile=profile, settings=settings, repo_path=repo_path)
    return FeatureStore(repo_path=str(repo_path), config=config)


def release(store: FeatureStore) -> None:
    """Close the online store connection a ``FeatureStore`` opened, if any.

    Feast 0.67's ``FeatureStore.close()`` is async and a no-op for SQLite and sync Redis: the
    SQLite connection and the Redis client sit on the online store object until it is garbage
    collected. SQLite allows one writer, so a materialization must not leave one behind.
    """
    _release_offline_engine()
    online_store = getattr(store.provider, "_online_store", None)
    if online_store is None:
        return
    for attribute in ("_conn", "_client"):
        handle = getattr(online_store, attribute, None)
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()
            setattr(online_store, attribute, None)


def _release_offline_engine() -> None:
    """Close the in-memory DuckDB that Feast's DuckDB offline store ran its joins in.

    The store reads parquet through ibis' process-wide default DuckDB backend and never closes
    it, so the memory of the last retrieval stays held and the interpreter ends with a live
    DuckDB connection (nanobind then prints "leaked instance" lines on exit). Dropping the
    default makes ibis open a fresh one on the next retrieval.
    """
    import ibis

    backend = ibis.options.default_backend
    if backend is not None:
        with contextlib.suppress(Exception):
            backend.disconnect()
        ibis.options.default_backend = None


@contextlib.contextmanager
def open_store(
    paths: StatePaths | None = None,
    *,
    profile: Profile | None = None,
    settings: Settings | None = None,
) -> Iterator[FeatureStore]:
    """``with open_store(paths) as store:`` - a store whose connections close on exit."""
    store = get_store(paths, profile=profile, settings=settings)
    try:
        yield store
    finally:
        release(store)


# --------------------------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplySummary:
    """What ``feast apply`` registered, and where."""

    project: str
    registry: str
    online_store: str
    entities: list[str]
    feature_views: list[str]
    on_demand_feature_views: list[str]
    feature_services: list[str]
    sources: dict[str, str]


# The definition modules of feature_repo/, in import order (what `feast apply` would import).
DEFINITION_MODULES = (
    "entities",
    "data_sources",
    "features",
    "on_demand_features",
    "feature_services",
)


def load_definitions(paths: StatePaths) -> RepoContents:
    """The feature repo's Feast objects, with every FileSource pointed at ``paths.exports``.

    Imports ``feature_repo`` as a package (once per process; no change to the working
    directory, ``sys.path``, ``sys.modules`` or the environment), collects its objects as
    ``feast.repo_operations.parse_repo`` does (each object once, by identity), and returns deep
    copies whose file sources read this state dir's exports, so one process can apply several
    state dirs and the shared module objects are never mutated.
    """
    import copy
    import importlib

    from feast import Entity, FeatureService, FeatureView, FileSource, OnDemandFeatureView
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.project import Project
    from feast.repo_contents import RepoContents

    contents = RepoContents(
        projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
        on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[],
    )  # fmt: skip
    buckets: list[tuple[type, list[Any]]] = [
        (Project, contents.projects),
        (OnDemandFeatureView, contents.on_demand_feature_views),
        (FeatureView, contents.feature_views),
        (FeatureService, contents.feature_services),
        (Entity, contents.entities),
        (DataSource, contents.data_sources),
    ]
    for name in DEFINITION_MODULES:
        module = importlib.import_module(f"feature_repo.{name}")
        for attribute in dir(module):
            obj = getattr(module, attribute)
            for kind, bucket in buckets:
                if isinstance(obj, kind):
                    if not any(obj is seen for seen in bucket):
                        bucket.append(obj)
                    break
    for view in contents.feature_views:  # sources defined inline with a view
        source = view.batch_source
        if source is not None and not any(source is seen for seen in contents.data_sources):
            contents.data_sources.append(source)
    contents = copy.deepcopy(contents)
    for view in contents.feature_views:
        _point_at_exports(view.batch_source, paths)
    for source in contents.data_sources:
        _point_at_exports(source, paths)
    for service in contents.feature_services:
        _point_log_at_state(service, paths)
    if any(
        isinstance(s, FileSource) and not Path(s.path).is_absolute() for s in contents.data_sources
    ):
        raise FeatureStoreError(
            "feature_repo: a FileSource kept a relative path"
        )  # pragma: no cover
    contents.entities.append(DUMMY_ENTITY)
    return contents


def _point_at_exports(source: Any, paths: StatePaths) -> None:
    from feast import FileSource

    if isinstance(source, FileSource):
        source.file_options.uri = str(paths.exports / Path(source.path).name)


def _point_log_at_state(service: Any, paths: StatePaths) -> None:
    """A feature service's file logging destination -> ``<state>/logs/<service>/features``
    (where the scoring service writes its served-feature log; rankflow.serving.served_log)."""
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    destination = getattr(service.logging_config, "destination", None)
    if isinstance(destination, FileLoggingDestination):
        destination.path = str(paths.root / "logs" / service.name / "features")


def apply_feature_repo(
    paths: StatePaths | None = None,
    *,
    profile: Profile | None = None,
    settings: Settings | None = None,
    repo_path: Path = FEATURE_REPO,
) -> ApplySummary:
    """``feast apply`` for the state dir of ``paths``: register the definitions, create tables.

    Runs Feast's own apply path (:func:`load_definitions`, the package-import counterpart of
    ``parse_repo``, then ``apply_total_with_repo_instance``, as the CLI does), after checking that the parquet exports exist with the expected
    columns. Re-applying keeps each view's materialization intervals (pinned by tests, see feast-dev/feast#2905).
    """
    from feast import Project
    from feast.repo_operations import apply_total_with_repo_instance

    paths = paths or StatePaths.default()
    repo_path = repo_path.resolve()
    check_exports(paths)
    repo = load_definitions(paths)
    store = get_store(paths, profile=profile, settings=settings, repo_path=repo_path)
    try:
        project = store.config.project
        names = {p.name for p in repo.projects}
        if names - {project}:
            raise FeatureStoreError(
                f"{repo_path}: Project object(s) {sorted(names)} do not match "
                f"project {project!r} in the feature_store yaml"
            )
        if not repo.projects:
            repo.projects.append(Project(name=project))
        apply_total_with_repo_instance(
            store, project, store.registry, repo, skip_source_validation=False
        )
        return ApplySummary(
            project=project,
            registry=str(store.config.registry.path),
            online_store=store.config.online_store.type,
            entities=sorted(e.name for e in repo.entities if e.name != "__dummy"),
            feature_views=sorted(v.name for v in repo.feature_views),
            on_demand_feature_views=sorted(v.name for v in repo.on_demand_feature_views),
            feature_services=sorted(s.name for s in repo.feature_services),
            sources={
                v.batch_source.name: v.batch_source.path
                for v in sorted(repo.feature_views, key=lambda v: v.name)
                if v.batch_source is not None
            },
        )
    finally:
        release(store)


# --------------------------------------------------------------------------------------------
# Materialize
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializedInterval:
    """One view's load: ``mode`` is ``initial`` (first load: end - TTL, or everything for views
    without a TTL), ``incremental`` (from the previous end) or ``up_to_date`` (nothing to do)."""

    start: datetime | None
    end: datetime
    mode: Literal["initial", "incremental", "up_to_date"]


@dataclass(frozen=True)
class MaterializeSummary:
    end: datetime
    online_store: str
    views: dict[str, MaterializedInterval] = field(default_factory=dict)


def _as_utc(value: datetime | pd.Timestamp) -> datetime:
    """Naive datetimes are UTC (the data contract's rule); aware ones are converted."""
    value = pd.Timestamp(value)
    value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    return value.to_pydatetime()


def materialize_incremental(
    paths: StatePaths | None,
    end: datetime,
    *,
    profile: Profile | None = None,
) -> MaterializeSummary:
    """Load every feature view into the online store up to ``end``, the data's as-of time.

    Views already materialized continue from their previous end
    (``FeatureStore.materialize_incremental``). For a view never materialized Feast 0.67 would
    start at *wall-clock* now - TTL, which loads nothing from old (simulated or backfilled)
    data, so the first load is an explicit ``materialize(end - ttl, end)`` (from 1970 for views
    without a TTL); it records ``end`` so that later runs are incremental. Use
    :func:`exports_as_of` for ``end`` when the as-of time is "whatever dbt last built".
    """
    paths = paths or StatePaths.default()
    end = _as_utc(end)
    check_exports(paths)
    with open_store(paths, profile=profile) as store:
        views: dict[str, MaterializedInterval] = {}
        incremental: list[str] = []
        for view in sorted(store.list_feature_views(), key=lambda v: v.name):
            previous_end = view.most_recent_end_time
            if previous_end is None:
                start = end - view.ttl if view.ttl and view.ttl > timedelta(0) else _NO_TTL_START
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
                views[view.name] = MaterializedInterval(start, end, "initial")
            elif _as_utc(previous_end) >= end:
                views[view.name] = MaterializedInterval(None, end, "up_to_date")
            else:
                incremental.append(view.name)
                views[view.name] = MaterializedInterval(_as_utc(previous_end), end, "incremental")
        if incremental:
            store.materialize_incremental(end_date=end, feature_views=incremental)
        return MaterializeSummary(end=end, online_store=store.config.online_store.type, views=views)


# --------------------------------------------------------------------------------------------
# Feature service schema and online lookups
# --------------------------------------------------------------------------------------------


def feature_service_schema(
    store: FeatureStore, name: str = DEFAULT_FEATURE_SERVICE
) -> dict[str, str]:
    """Feature name -> Feast value type (``"Int64"``, ``"Float64"``, ``"String"``, ...).

    In the service's order, under the bare names that retrieval with
    ``full_feature_names=False`` produces; the models derive their feature spec from this.
    """
    service = store.get_feature_service(name)
    schema: dict[str, str] = {}
    for projection in service.feature_view_projections:
        for feature in projection.features:
            if feature.name in schema:
                raise FeatureStoreError(
                    f"feature service {name!r}: feature {feature.name!r} comes from more than one "
                    f"view (again in {projection.name!r}); bare feature names must be unique"
                )
            schema[feature.name] = str(feature.dtype)
    return schema


_NUMERIC_TYPES = {"Int32", "Int64", "Float32", "Float64", "Bool"}


def coerce_features(frame: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Give every feature column one dtype whatever its nulls: numbers float64 (NaN), else object.

    Feast returns an Int64 feature as int64 when a batch has no nulls and float64 when it has
    some, and an all-null column as object; models, and online/offline comparisons, need the
    same dtype for the same feature every time. Returns a new frame; other columns untouched.
    """
    out = frame.copy()
    for name, value_type in schema.items():
        if name not in out.columns:
            raise FeatureStoreError(f"feature {name!r} is missing from the retrieved frame")
        if value_type in _NUMERIC_TYPES:
            out[name] = pd.to_numeric(out[name], errors="raise").astype("float64")
        else:
            column = out[name].astype(object)
            out[name] = column.where(column.notna(), None)
    return out


def online_features(
    paths: StatePaths | None,
    entity_rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    profile: Profile | None = None,
) -> pd.DataFrame:
    """Online features of ``feature_service`` for each entity row, in the rows' order.

    Each row carries the join keys (``user_id``, ``item_id``, ``category``) and the request
    fields of ``request_features`` (``position``, ``device``, ``hour_of_day``). Returns the
    rows' columns followed by the service's features in schema order, dtypes as
    :func:`coerce_features` makes them (the same as in the training set).
    """
    rows = (
        entity_rows.to_dict(orient="records")
        if isinstance(entity_rows, pd.DataFrame)
        else [dict(row) for row in entity_rows]
    )
    if not rows:
        raise ValueError("online_features: no entity rows given")
    with open_store(paths, profile=profile) as store:
        schema = feature_service_schema(store, feature_service)
        response = store.get_online_features(
            features=store.get_feature_service(feature_service),
            entity_rows=rows,
            full_feature_names=False,
        ).to_df()
    keys = [column for column in rows[0] if column not in schema]
    frame = pd.concat(
        [pd.DataFrame(rows, columns=keys), response[list(schema)].reset_index(drop=True)], axis=1
    )
    return coerce_features(frame, schema)


def refresh_online_store(
    paths: StatePaths, *, settings: Settings | None = None
) -> tuple[ApplySummary, MaterializeSummary]:
    """``feast apply`` then ``materialize-incremental`` up to the exports' as-of time.

    The end of the load is the newest feature timestamp dbt built, not the wall clock: the data
    may be a backfill or a simulation that ended days ago.
    """
    applied = apply_feature_repo(paths, settings=settings)
    return applied, materialize_incremental(paths, exports_as_of(paths))
