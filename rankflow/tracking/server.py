"""A local MLflow server (UI + REST) over a state home, as a supervised child process.

:func:`start_mlflow_server` starts ``mlflow server`` on loopback in its own process group and
waits for ``/health``; :class:`MlflowServer` stops the whole group. :func:`serve_ui` is what
``make mlflow-ui`` (and the CLI) runs: serve until Ctrl-C or SIGTERM. The child gets
:meth:`rankflow.settings.Settings.child_env`, never this process's environment patched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.tracking.setup import (
    LOOPBACK,
    TrackingError,
    artifact_root,
    default_tracking_uri,
    is_local_store,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from rankflow.config import TrackingConfig
    from rankflow.settings import Settings


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
    settings: Settings,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    backend_uri: str | None = None,
    startup_timeout: float = 180.0,
    log_file: Path | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` over the state home's store and wait until /health answers.

    Binds to loopback by default, one worker, artifacts read from where the runs put them
    (no artifact proxy). The server runs in its own process group; use it as a context
    manager or call ``stop()``. Raises :class:`TrackingError` (with the log's tail) if it
    exits or does not answer within ``startup_timeout`` seconds.
    """
    paths = settings.paths
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
    env = settings.child_env(
        {
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            # No background job runner (GenAI jobs): seven fewer processes on a small machine.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
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
    _wait_until_healthy(server, startup_timeout)
    return server


def _wait_until_healthy(server: MlflowServer, timeout: float) -> None:
    """Poll /health; stop the server and raise (with its log's tail) if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            server.stop()
            raise TrackingError(
                f"mlflow server exited with code {server.process.returncode}; "
                f"log {server.log_file}:\n" + _tail(server.log_file)
            )
        if _healthy(server.url):
            return
        if time.monotonic() > deadline:
            server.stop()
            raise TrackingError(
                f"mlflow server on {server.url} did not answer /health within "
                f"{timeout:.0f} s; log {server.log_file}:\n" + _tail(server.log_file)
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


def serve_ui(
    settings: Settings, tracking: TrackingConfig, port: int = 5000, host: str = LOOPBACK
) -> int:
    """Serve the MLflow UI over the state home's store until Ctrl-C / SIGTERM; an exit code.

    With a remote tracking server configured (``MLFLOW_TRACKING_URI=http://...``) there is
    nothing to serve: that server has the UI, and this says so.
    """
    uri = resolve_tracking_uri(tracking, settings)
    if not is_local_store(uri):
        print(f"MLflow tracking is {uri}: that server already has the UI; open it there.")
        return 0
    try:
        server = start_mlflow_server(settings, host=host, port=port, backend_uri=uri)
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
