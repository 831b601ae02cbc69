"""The Feast feature store behind rankflow: configuration, apply, materialization, lookups.

The feature definitions live in ``feature_repo/`` and are plain Feast: ``feast -c feature_repo
apply`` works with ``RANKFLOW_HOME`` set. This module is the Python door to the same repo, bound
to a :class:`~rankflow.settings.Settings` instead of the environment, so that the pipeline, the
tests and a scoring service can each point at their own state directory:

- :func:`get_store` builds a ``FeatureStore`` from ``feature_repo/feature_store.yaml`` (or the
  Redis profile) with ``${RANKFLOW_HOME}`` and the Redis address filled in from ``settings``;
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
import yaml

from rankflow.features.definitions import load_definitions
from rankflow.features.errors import FeatureStoreError
from rankflow.features.exports import (  # re-exported: the export checks were part of this module
    EXPORT_SCHEMAS,
    FEATURE_EXPORTS,
    ExportError,
    check_export,
    check_exports,
    export_path,
    exports_as_of,
)
from rankflow.features.output import feast_output, known_warnings_dropped
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.settings import Settings
from rankflow.times import as_utc
from rankflow.warehouse.rebuilt import clear_rebuilt, pending_rebuild

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

# Feast itself is imported inside the functions that use it: importing it takes seconds.

__all__ = [
    "EXPORT_SCHEMAS",
    "FEATURE_EXPORTS",
    "FEATURE_REPO",
    "ApplySummary",
    "ExportError",
    "FeatureStoreError",
    "MaterializeSummary",
    "apply_feature_repo",
    "bound_online_waits",
    "check_export",
    "check_exports",
    "coerce_features",
    "export_path",
    "exports_as_of",
    "feature_service_schema",
    "get_store",
    "materialize_incremental",
    "online_features",
    "open_store",
    "refresh_online_store",
    "release",
    "repo_config",
]

FEATURE_REPO = REPO_ROOT / "feature_repo"

Profile = Literal["sqlite", "redis"]
PROFILE_FILES: dict[str, str] = {
    "sqlite": "feature_store.yaml",
    "redis": "feature_store.redis.yaml",
}

# Where a view that was never materialized starts when it has no TTL (attribute views): early
# enough for any signup or item creation, so the first load is complete.
_NO_TTL_START = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


def repo_config(
    settings: Settings,
    *,
    profile: Profile | None = None,
    repo_path: Path = FEATURE_REPO,
) -> RepoConfig:
    """The ``RepoConfig`` of ``feature_store[.redis].yaml`` for one state dir.

    Mirrors ``feast.repo_config.load_repo_config``, which expands ``${VAR}`` from the process
    environment, but takes the values from :class:`~rankflow.settings.Settings` (state dir,
    Redis address), so it never depends on, nor changes, the caller's environment. ``profile``
    (default ``settings.feast_online_store``) picks the online store.
    """
    from feast import RepoConfig

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
    settings: Settings,
    *,
    profile: Profile | None = None,
    repo_path: Path = FEATURE_REPO,
) -> FeatureStore:
    """A ``FeatureStore`` over ``feature_repo/`` whose registry and online store are ``settings``'.

    The caller owns the store; prefer :func:`open_store`, which closes its connections.
    """
    from feast import FeatureStore

    settings.paths.feast.mkdir(parents=True, exist_ok=True)
    config = repo_config(settings, profile=profile, repo_path=repo_path)
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


def bound_online_waits(store: FeatureStore, seconds: float) -> None:
    """Make a read of a locked SQLite online store give up after ``seconds``.

    Feast opens its SQLite connection with sqlite3's default 5 s wait for a lock, so a reader
    that meets a writer's exclusive lock (a materialization committing, another tool) stalls
    that long before failing. The connection is opened here, once, with the shorter wait; Feast
    keeps it until :func:`release`. Redis bounds its reads through its connection string
    (``host:port,socket_timeout=1``), not here.
    """
    if store.config.online_store.type != "sqlite":
        return
    # Feast's own (private) connection: it offers no setting for the wait.
    connection = store.provider.online_store._get_conn(store.config)
    connection.execute(f"PRAGMA busy_timeout = {max(1, round(seconds * 1000))}")


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
    settings: Settings,
    *,
    profile: Profile | None = None,
    offline: bool = False,
) -> Iterator[FeatureStore]:
    """``with open_store(settings) as store:`` - a store whose connections close on exit.

    ``offline=True`` for a caller that reads the batch sources (historical retrieval,
    materialization): the registry is checked first to point at this state dir's exports
    (:func:`check_sources_in_state`).
    """
    store = get_store(settings, profile=profile)
    try:
        if offline:
            check_sources_in_state(store, settings.paths)
        with known_warnings_dropped():
            yield store
    finally:
        release(store)


def check_sources_in_state(store: FeatureStore, paths: StatePaths) -> None:
    """Raise ``FeatureStoreError`` unless every feature view's batch source reads this state
    dir's exports.

    ``feast apply`` stores each ``FileSource`` with the absolute path of the exports it was
    applied for. A state dir copied or moved elsewhere keeps that registry: its historical
    retrievals and materializations would silently read the original's exports (or fail on a
    missing path). Re-applying the feature repo for the new state dir (``rankflow features``,
    or any run that builds features) rewrites the paths.
    """
    exports = paths.exports.resolve()
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        path = getattr(view.batch_source, "path", None)
        if path and not Path(path).resolve().is_relative_to(exports):
            raise FeatureStoreError(
                f"{store.config.registry.path}: feature view {view.name!r} reads {path}, outside "
                f"this state dir's exports ({exports}): the Feast registry was applied for another "
                f"state dir (copied or moved?); run `rankflow features` with "
                f"RANKFLOW_HOME={paths.root} to re-apply it here (a plain `feast apply` would "
                "drop the original's online tables)"
            )


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
    log_file: Path | None = None  # what Feast printed (None: --verbose, it went to the console)


def apply_feature_repo(
    settings: Settings,
    *,
    profile: Profile | None = None,
    repo_path: Path = FEATURE_REPO,
) -> ApplySummary:
    """``feast apply`` for the state dir of ``settings``: register the definitions, create tables.

    Runs Feast's own apply path (:func:`load_definitions`, the package-import counterpart of
    ``parse_repo``, then ``apply_total_with_repo_instance``, as the CLI does), after checking that the parquet exports exist with the expected
    columns. Re-applying keeps each view's materialization intervals (pinned by tests, see feast-dev/feast#2905).
    """
    from feast import Project
    from feast.repo_operations import apply_total_with_repo_instance

    paths = settings.paths
    repo_path = repo_path.resolve()
    check_exports(paths)
    repo = load_definitions(paths)
    store = get_store(settings, profile=profile, repo_path=repo_path)
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
        _forget_foreign_infra(store, project, paths)
        # Feast's own source check only stats the path, which fails (a logged warning) for the
        # per-day exports' glob; check_exports above checked every file's columns instead.
        with feast_output(paths, "feast apply") as log_file:
            apply_total_with_repo_instance(
                store, project, store.registry, repo, skip_source_validation=True
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
            log_file=log_file,
        )
    finally:
        release(store)


def _forget_foreign_infra(store: FeatureStore, project: str, paths: StatePaths) -> None:
    """Drop from the registry the online tables recorded at paths outside this state dir.

    The registry of a copied or moved state dir still lists the original's SQLite tables, by
    absolute path. Feast's apply diffs them against this state dir's tables and tears down the
    "removed" ones: it would drop the original's online tables. Forgetting them first makes the
    apply create this state dir's tables and leave the original alone.
    """
    from feast.infra.infra_object import Infra

    root = paths.root.resolve()
    infra = store.registry.get_infra(project)
    kept = [
        o
        for o in infra.infra_objects
        if not getattr(o, "path", None) or Path(o.path).resolve().is_relative_to(root)
    ]
    if len(kept) != len(infra.infra_objects):
        store.registry.update_infra(Infra(infra_objects=kept), project, commit=True)


# --------------------------------------------------------------------------------------------
# Materialize
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaterializedInterval:
    """One view's load: ``mode`` is ``initial`` (first load: end - TTL, or everything for views
    without a TTL), ``incremental`` (from the previous end), ``rebuilt`` (from the earliest day
    the warehouse rewrote since the last load) or ``up_to_date`` (nothing to do)."""

    start: datetime | None
    end: datetime
    mode: Literal["initial", "incremental", "up_to_date", "rebuilt"]


@dataclass(frozen=True)
class MaterializeSummary:
    end: datetime
    online_store: str
    views: dict[str, MaterializedInterval] = field(default_factory=dict)
    log_file: Path | None = None  # what Feast printed (None: --verbose, it went to the console)


def materialize_incremental(
    settings: Settings,
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
    paths = settings.paths
    end = as_utc(end)
    check_exports(paths)
    rebuilt = pending_rebuild(paths)
    with (
        open_store(settings, profile=profile, offline=True) as store,
        feast_output(paths, "feast materialize") as log_file,
    ):
        views: dict[str, MaterializedInterval] = {}
        incremental: list[str] = []
        for view in sorted(store.list_feature_views(), key=lambda v: v.name):
            previous_end = view.most_recent_end_time
            if previous_end is not None and rebuilt is not None and rebuilt <= as_utc(previous_end):
                # Rows the online store already holds were rewritten: reload from there.
                store.materialize(start_date=rebuilt, end_date=end, feature_views=[view.name])
                views[view.name] = MaterializedInterval(rebuilt, end, "rebuilt")
            elif previous_end is None:
                start = end - view.ttl if view.ttl and view.ttl > timedelta(0) else _NO_TTL_START
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
                views[view.name] = MaterializedInterval(start, end, "initial")
            elif as_utc(previous_end) >= end:
                views[view.name] = MaterializedInterval(None, end, "up_to_date")
            else:
                incremental.append(view.name)
                views[view.name] = MaterializedInterval(as_utc(previous_end), end, "incremental")
        if incremental:
            store.materialize_incremental(end_date=end, feature_views=incremental)
        clear_rebuilt(paths)
        return MaterializeSummary(end, store.config.online_store.type, views, log_file)


# --------------------------------------------------------------------------------------------
# Feature service schema and online lookups
# --------------------------------------------------------------------------------------------


def feature_service_schema(store: FeatureStore, name: str) -> dict[str, str]:
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
    settings: Settings,
    entity_rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    feature_service: str,
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
    with open_store(settings, profile=profile) as store:
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


def refresh_online_store(settings: Settings) -> tuple[ApplySummary, MaterializeSummary]:
    """``feast apply`` then ``materialize-incremental`` up to the exports' as-of time.

    The end of the load is the newest feature timestamp dbt built, not the wall clock: the data
    may be a backfill or a simulation that ended days ago.
    """
    applied = apply_feature_repo(settings)
    return applied, materialize_incremental(settings, exports_as_of(settings.paths))
