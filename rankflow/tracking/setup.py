"""MLflow tracking for rankflow: where runs go, the experiment, lineage, and a local UI server.

Two profiles, switched by configuration only:

- embedded (default): the tracking and registry store is a SQLite file,
  ``sqlite:///$RANKFLOW_HOME/mlflow/mlflow.db``, and the experiment's artifacts are plain files
  under ``$RANKFLOW_HOME/mlflow/artifacts``. SQLite takes one writer at a time: one training
  process per state dir.
- server: ``MLFLOW_TRACKING_URI`` in the environment (e.g. ``http://mlflow:5000``, an MLflow
  tracking server over Postgres) wins over everything else; the server decides where
  artifacts go. ``tracking.uri`` in ``configs/rankflow.yaml`` is the same switch in YAML.

:func:`start_mlflow_server` serves the UI over a state dir on loopback (``make mlflow-ui``
and the browser test use it); ``python -m rankflow.tracking.setup serve`` is its command line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rankflow.paths import REPO_ROOT, StatePaths

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.config import RankflowConfig
    from rankflow.features.training_set import TrainingSet

TRACKING_ENV_VAR = "MLFLOW_TRACKING_URI"
DEFAULT_EXPERIMENT = "rankflow-ctr"
LOOPBACK = "127.0.0.1"

# Tag keys (MLflow shows tags as they are spelt; keep the ``rankflow.`` prefix for ours).
TAG_GIT_SHA = "rankflow.git_sha"
TAG_GIT_DIRTY = "rankflow.git_dirty"
TAG_DBT_MANIFEST = "rankflow.dbt_manifest_sha256"
TAG_FEAST_PROJECT = "rankflow.feast_project"
TAG_FEATURE_SERVICE = "rankflow.feature_service"
TAG_DATA_WINDOW = "rankflow.data_window"
TAG_SIMULATOR_SEED = "rankflow.simulator_seed"


class TrackingError(RuntimeError):
    """Tracking cannot be set up (bad URI, server not reachable); the message says which."""


# --------------------------------------------------------------------------------------------
# Where runs go
# --------------------------------------------------------------------------------------------


def default_tracking_uri(paths: StatePaths) -> str:
    """``sqlite:////abs/state/mlflow/mlflow.db``: the embedded profile's store."""
    return f"sqlite:///{(paths.mlflow / 'mlflow.db').resolve()}"


def artifact_root(paths: StatePaths) -> Path:
    """Where the embedded profile keeps run and model artifacts."""
    return (paths.mlflow / "artifacts").resolve()


def resolve_tracking_uri(config: RankflowConfig | None, paths: StatePaths) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``tracking.uri``, else the SQLite file under ``paths``."""
    from_env = os.environ.get(TRACKING_ENV_VAR, "").strip()
    if from_env:
        return from_env
    if config is not None and config.tracking.uri:
        return config.tracking.uri
    return default_tracking_uri(paths)


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

    @property
    def embedded(self) -> bool:
        return is_local_store(self.uri)

    def ui_url(self, host: str = LOOPBACK, port: int = 5000) -> str:
        """Where ``make mlflow-ui`` serves this experiment (the embedded profile)."""
        if not self.embedded:
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}"
        return f"http://{host}:{port}/#/experiments/{self.experiment_id}"


def setup_tracking(config: RankflowConfig | None, paths: StatePaths) -> Tracking:
    """Point MLflow (tracking and registry) at the configured store; create the experiment.

    Sets the process-wide MLflow URIs and active experiment, since ``mlflow.pyfunc.log_model``
    and friends use them. In the embedded profile the experiment is created with its
    artifact location under the state dir (otherwise MLflow would write ``./mlruns``).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(config, paths)
    name = config.tracking.experiment if config is not None else DEFAULT_EXPERIMENT
    location: str | None = None
    if uri.startswith("sqlite:"):
        paths.mlflow.mkdir(parents=True, exist_ok=True)
        artifact_root(paths).mkdir(parents=True, exist_ok=True)
    if is_local_store(uri):
        location = artifact_root(paths).as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        experiment = client.get_experiment_by_name(name)
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


# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    # Read-only: --no-optional-locks keeps `git status` from refreshing the index file.
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_sha() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD (None outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def dbt_manifest_path(paths: StatePaths) -> Path | None:
    """The manifest of the warehouse build: the state dir's, else ``dbt_project/target``'s."""
    for candidate in (
        paths.root / "dbt" / "target" / "manifest.json",
        REPO_ROOT / "dbt_project" / "target" / "manifest.json",
    ):
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def feast_project(repo_path: Path | None = None) -> str | None:
    """The ``project:`` of ``feature_repo/feature_store.yaml`` (read without importing Feast)."""
    file = (repo_path or REPO_ROOT / "feature_repo") / "feature_store.yaml"
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    project = data.get("project") if isinstance(data, dict) else None
    return str(project) if project else None


def simulator_seed(config: RankflowConfig, paths: StatePaths) -> int | None:
    """The seed of the simulated data in use (``truth/simulation.json``), None for own data."""
    if config.source != "simulate":
        return None
    file = paths.truth / "simulation.json"
    if file.is_file():
        import json

        with contextlib.suppress(ValueError, OSError):
            seed = json.loads(file.read_text()).get("seed")
            if seed is not None:
                return int(seed)
    return config.simulation.seed


def lineage_tags(
    config: RankflowConfig, paths: StatePaths, training_set: TrainingSet
) -> dict[str, str]:
    """Tags that say where a run's model came from: code, warehouse build, features, data."""
    tags: dict[str, str] = {
        TAG_FEATURE_SERVICE: training_set.feature_service,
        TAG_DATA_WINDOW: str(training_set.window),
        "rankflow.data_source": config.source,
    }
    for split, window in training_set.split_windows.items():
        tags[f"rankflow.window.{split}"] = str(window)
    sha = git_sha()
    if sha:
        tags[TAG_GIT_SHA] = sha
        tags["mlflow.source.git.commit"] = sha
        dirty = git_dirty()
        if dirty is not None:
            tags[TAG_GIT_DIRTY] = str(dirty).lower()
    manifest = dbt_manifest_path(paths)
    if manifest is not None:
        tags[TAG_DBT_MANIFEST] = file_sha256(manifest)
        tags["rankflow.dbt_manifest_path"] = str(manifest)
    project = feast_project()
    if project:
        tags[TAG_FEAST_PROJECT] = project
    seed = simulator_seed(config, paths)
    if seed is not None:
        tags[TAG_SIMULATOR_SEED] = str(seed)
    return tags


# --------------------------------------------------------------------------------------------
# A local MLflow server (UI + REST) over a state dir
# --------------------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class MlflowServer:
    """A running ``mlflow server`` started by :func:`start_mlflow_server`; stop() ends it."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    backend_uri: str
    log_file: Path
    _log_handle: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group (its workers too), SIGKILL what lingers."""
        group = self.process.pid  # the server leads its own process group (new session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_mlflow_server(
    paths: StatePaths,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    backend_uri: str | None = None,
    startup_timeout: float = 180.0,
    log_file: Path | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` over the state dir's store and wait until /health answers.

    Binds to loopback by default, one worker, artifacts read from where the runs put them
    (no artifact proxy). The server runs in its own process group; use it as a context
    manager or call ``stop()``. Raises :class:`TrackingError` (with the log's tail) if it
    exits or does not answer within ``startup_timeout`` seconds.
    """
    backend_uri = backend_uri or default_tracking_uri(paths)
    if backend_uri.startswith("sqlite:"):
        db = Path(backend_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise TrackingError(f"{db}: no MLflow store yet (train a model first)")
    port = port or free_port(host)
    root = artifact_root(paths)
    root.mkdir(parents=True, exist_ok=True)
    log_file = log_file or paths.mlflow / f"server-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = log_file.open("wb")
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        # No background job runner (GenAI jobs): seven fewer processes on a small machine.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--default-artifact-root",
        root.as_uri(),
        "--no-serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=paths.mlflow,
        env=env,
        start_new_session=True,
    )
    server = MlflowServer(process, host, port, backend_uri, log_file, handle)
    deadline = time.monotonic() + startup_timeout
    while True:
        if not server.alive():
            server.stop()
            raise TrackingError(
                f"mlflow server exited with code {process.returncode}; log {log_file}:\n"
                + _tail(log_file)
            )
        if _healthy(server.url):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise TrackingError(
                f"mlflow server on {server.url} did not answer /health within "
                f"{startup_timeout:.0f} s; log {log_file}:\n" + _tail(log_file)
            )
        time.sleep(0.5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(file: Path, lines: int = 30) -> str:
    try:
        return "\n".join(file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


# --------------------------------------------------------------------------------------------
# Command line: python -m rankflow.tracking.setup serve [--port N]
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rankflow.tracking.setup",
        description="MLflow UI over the rankflow state dir",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the MLflow UI on loopback until Ctrl-C")
    serve.add_argument("--host", default=LOOPBACK)
    serve.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)

    paths = StatePaths.default()
    uri = os.environ.get(TRACKING_ENV_VAR, "").strip()
    if uri and not is_local_store(uri):
        print(f"MLFLOW_TRACKING_URI={uri}: that server already has the UI; open it there.")
        return 0
    try:
        server = start_mlflow_server(paths, host=args.host, port=args.port, backend_uri=uri or None)
    except TrackingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"MLflow UI on {server.url} (store {server.backend_uri}); Ctrl-C stops it", flush=True)
    # SIGTERM (e.g. a supervisor stopping `make mlflow-ui`) stops the server too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
