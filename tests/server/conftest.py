"""Real servers on loopback for the server-profile tests, started here and stopped afterwards.

- ``redis_server``: Debian's ``redis-server`` (``make redis-deps`` installs it), no persistence.
- ``postgres``: PostgreSQL 15 from ``/usr/lib/postgresql/15/bin`` (initdb + pg_ctl) on a temp
  dir and a free port, run as the ``postgres`` OS user when the tests run as root (PostgreSQL
  refuses root); databases ``mlflow``, ``prefect`` and ``rankflow`` (the promotion lock).
- ``mlflow_server``: ``mlflow server`` over Postgres (``postgresql+psycopg://``), serving the
  artifacts itself (``--serve-artifacts``), as in docker/compose.yaml.
- ``prefect_server``: ``prefect server start`` over Postgres (``postgresql+asyncpg://``), with
  its services (the task-run recorder turns the events of Dask workers' task runs into rows)
  but no scheduler (no deployments here).

Each is session-scoped and started only when a test asks for it. A server that cannot start
fails the tests that need it with its log's tail; none is mocked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = Path("/usr/bin/redis-server")
DATABASES = ("mlflow", "prefect", "rankflow")
STARTUP_SECONDS = 240.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    """A child process in its own process group; ``stop()`` ends the whole group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    address: str

    def wait_ready(self, ready: Callable[[], bool], timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.process.returncode}):\n{_tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} not ready in {timeout:.0f} s:\n{_tail(self.log)}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL), so an
    aborted session leaves no server behind (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start(name: str, command: list[str], log: Path, address: str, **kwargs) -> Server:
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        **kwargs,
    )
    handle.close()  # the child keeps its own descriptor
    return Server(name, process, log, address)


def quiet_env(**extra: str) -> dict[str, str]:
    """This process's environment (the session's temp homes) plus no telemetry."""
    return {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a fresh redis-server (Feast's connection-string form)."""
    if not REDIS_SERVER.is_file():
        pytest.fail(f"{REDIS_SERVER} is missing: run `make redis-deps` (make test does)")
    import redis

    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = [
        str(REDIS_SERVER),
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--protected-mode",
        "yes",
    ]
    server = start("redis-server", command, folder / "redis.log", f"{LOOPBACK}:{port}")

    def ready() -> bool:
        try:
            return bool(redis.Redis(host=LOOPBACK, port=port, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    server.wait_ready(ready, timeout=60)
    try:
        yield server.address
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def url(self, database: str, driver: str = "") -> str:
        """``postgresql[+driver]://user@host:port/database`` (trust auth on loopback)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{database}"


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` OS user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and no `postgres` OS user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").is_file():
        pytest.fail(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing)")
    import psycopg

    # Not under pytest's temp root: that is mode 0700 and owned by root, so the postgres user
    # could not reach it. mkdtemp's folder is handed to that user.
    folder = Path(tempfile.mkdtemp(prefix="rankflow-pg-"))
    data, log = folder / "data", folder / "postgres.log"
    prefix = _as_postgres_user()
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-c listen_addresses={LOOPBACK} -p {port} -k {folder} -c fsync=off"
        run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "120",
            "start",
        )
    except subprocess.CalledProcessError as error:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {error.stderr.decode()[-2000:]}\n{_tail(log)}")
    server = Postgres(LOOPBACK, port, "postgres")
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
            for name in DATABASES:
                connection.execute(f'CREATE DATABASE "{name}"')
        yield server
    finally:
        subprocess.run(
            [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# MLflow and Prefect servers on Postgres
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path  # where the server stores what clients upload through it


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts = folder / "artifacts"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        postgres.url("mlflow", "psycopg"),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = quiet_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server = start(
        "mlflow server",
        command,
        folder / "mlflow.log",
        f"http://{LOOPBACK}:{port}",
        env=env,
        cwd=folder,
    )
    server.wait_ready(lambda: http_ok(f"{server.address}/health"))
    try:
        yield MlflowServer(server.address, artifacts)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prefect_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL (``http://127.0.0.1:<port>/api``) of a Prefect server on Postgres."""
    folder = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--no-scheduler",
        "--no-late-runs",
    ]
    env = quiet_env(
        PREFECT_HOME=str(folder / "home"),
        PREFECT_API_DATABASE_CONNECTION_URL=postgres.url("prefect", "asyncpg"),
        PREFECT_UI_ENABLED="false",
    )
    env.pop("PREFECT_API_URL", None)
    api = f"http://{LOOPBACK}:{port}/api"
    server = start("prefect server", command, folder / "prefect.log", api, env=env, cwd=folder)
    server.wait_ready(lambda: http_ok(f"{api}/health"))
    try:
        yield api
    finally:
        server.stop()
