"""The feature repo's Feast objects for one state directory, without touching the process.

``feast apply`` imports ``feature_repo/*.py`` as top-level modules from the repo folder (it
changes the working directory and ``sys.path`` to do so). rankflow imports the same files as the
package ``feature_repo`` instead and points deep copies of the objects at a given state dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.features.errors import FeatureStoreError
from rankflow.paths import StatePaths

if TYPE_CHECKING:
    from feast import FeatureService
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents


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
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )
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


def _point_at_exports(source: DataSource, paths: StatePaths) -> None:
    from feast import FileSource

    from rankflow.features.exports import EXPORT_SCHEMAS, source_path

    if isinstance(source, FileSource):
        path = Path(source.path)  # exports/<name>.parquet, or exports/<name>/*.parquet per day
        name = path.parent.name if path.name == "*.parquet" else path.stem
        if name not in EXPORT_SCHEMAS:
            raise FeatureStoreError(f"feature_repo: source {source.name!r} reads no known export")
        source.file_options.uri = source_path(paths, name)


def _point_log_at_state(service: FeatureService, paths: StatePaths) -> None:
    """A feature service's file logging destination -> ``<state>/logs/<service>/features``
    (where the scoring service writes its served-feature log; rankflow.serving.served_log)."""
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    destination = getattr(service.logging_config, "destination", None)
    if isinstance(destination, FileLoggingDestination):
        destination.path = str(paths.logs / service.name / "features")
