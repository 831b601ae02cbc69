"""Where MLflow runs go: the tracking URI (decided in one place) and the experiment.

Two profiles, switched by settings only:

- embedded (default): the tracking and registry store is a SQLite file,
  ``sqlite:///<home>/mlflow/mlflow.db``, and the experiment's artifacts are plain files
  under ``<home>/mlflow/artifacts``. SQLite takes one writer at a time: one training
  process per state dir.
- server: a tracking URI such as ``http://mlflow:5000`` (an MLflow tracking server over
  Postgres), from :class:`rankflow.settings.Settings` (``MLFLOW_TRACKING_URI``) or
  ``tracking.uri`` in ``configs/rankflow.yaml``; the server decides where artifacts go.

Lineage tags are :mod:`rankflow.tracking.lineage`'s; the local UI server is
:mod:`rankflow.tracking.server`'s.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.errors import RankflowError
from rankflow.paths import StatePaths
from rankflow.settings import Settings, apply_process_defaults

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.config import TrackingConfig

LOOPBACK = "127.0.0.1"
# Creating and migrating a fresh SQLite store takes seconds; a busy machine, many more.
MLFLOW_SETUP_WAIT_SECONDS = 300.0


class TrackingError(RankflowError):
    """Tracking cannot be set up (bad URI, server not reachable); the message says which."""


# --------------------------------------------------------------------------------------------
# Where runs go
# --------------------------------------------------------------------------------------------


def default_tracking_uri(paths: StatePaths) -> str:
    """``sqlite:////abs/state/mlflow/mlflow.db``: the embedded profile's store."""
    return f"sqlite:///{(paths.mlflow / 'mlflow.db').resolve()}"


def artifact_root(paths: StatePaths) -> Path:
    """Where the embedded profile keeps run and model artifacts."""
    return paths.mlflow_artifacts.resolve()


def resolve_tracking_uri(tracking: TrackingConfig, settings: Settings) -> str:
    """The one place the tracking URI is decided; first found wins:

    ``settings.mlflow_tracking_uri`` (an explicit setting, else ``$MLFLOW_TRACKING_URI``) >
    ``tracking.uri`` of the config > the embedded SQLite file under the state dir.
    """
    for uri in (settings.mlflow_tracking_uri, tracking.uri):
        if uri and uri.strip():
            return uri.strip()
    return default_tracking_uri(settings.paths)


def _first_use_lock(uri: str, settings: Settings) -> AbstractContextManager[object]:
    """For a SQLite store, the state's lock for its first use: MLflow creates and migrates the
    database on first contact, and two processes doing it at once on a fresh state fail with
    "expected to match one row when updating ... alembic_version". A server migrates its own."""
    if not uri.startswith("sqlite:"):
        return nullcontext()
    from rankflow.locks import exclusive

    lock = settings.paths.locks / "mlflow-store.lock"
    return exclusive(lock, "MLflow store setup", wait_seconds=MLFLOW_SETUP_WAIT_SECONDS)


def is_local_store(uri: str) -> bool:
    """True for stores this process writes itself (SQLite, files): the embedded profile."""
    return uri.startswith(("sqlite:", "file:", "/"))


@dataclass(frozen=True)
class Tracking:
    """A configured tracking target: URI, experiment, and a client bound to them."""

    uri: str
    experiment_name: str
    experiment_id: str
    artifact_location: str

    @property
    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def setup_tracking(tracking: TrackingConfig, settings: Settings) -> Tracking:
    """Point MLflow (tracking and registry) at the configured store; create the experiment.

    Sets the process-wide MLflow URIs and active experiment, since ``mlflow.pyfunc.log_model``
    and friends use them. In the embedded profile the experiment is created with its
    artifact location under the state dir (otherwise MLflow would write ``./mlruns``).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    apply_process_defaults()
    paths = settings.paths
    uri = resolve_tracking_uri(tracking, settings)
    name = tracking.experiment
    location: str | None = None
    if uri.startswith("sqlite:"):
        paths.mlflow.mkdir(parents=True, exist_ok=True)
        artifact_root(paths).mkdir(parents=True, exist_ok=True)
    if is_local_store(uri):
        location = artifact_root(paths).as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with _first_use_lock(uri, settings):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            experiment = client.get_experiment_by_name(name)
            client.search_registered_models(max_results=1)  # the registry's store, too
        if experiment is None:
            try:
                client.create_experiment(name, artifact_location=location)
            except MlflowException as error:  # created meanwhile by another process
                if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
                    raise
            experiment = client.get_experiment_by_name(name)
        assert experiment is not None
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
    except MlflowException as error:
        raise TrackingError(f"MLflow tracking at {uri}: {error}") from error
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return Tracking(uri, name, experiment.experiment_id, experiment.artifact_location)
