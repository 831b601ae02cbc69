"""Shared test setup: every test session gets its own state directory.

Nothing a test generates may land in the checkout's .state/, so the session points
RANKFLOW_HOME (and the tools' own homes) at a temporary folder before any test runs; tests that
need a private state dir still set RANKFLOW_HOME themselves with monkeypatch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rankflow.paths import StatePaths
from tests.fixtures.prefect_server import shared_api_url, stop_shared_server
from tests.fixtures.session import (
    SESSION_DIR_ENV,
    create_session_folder,
    remove_session_folder,
)

# `make test` runs the suite on two pytest-xdist workers. A work unit is a test module, so a
# module-scoped state (the canary scenario, the flows' tiny build) is built once; modules that
# share a worker-local session state form one unit, so that state is built once too. (xdist's
# own `--dist loadgroup` does not work with pytest 9: it renames node ids through an attribute
# pytest 9 no longer reads, so every test became its own unit.) The built state with a champion
# (``online_state``) is shared across the workers instead (tests/fixtures/session.py), so the
# modules that read it stay units of their own and both workers can run them.
SHARED_STATE_UNITS = {  # module (or folder) -> work unit
    # tests/server/conftest.py: PostgreSQL, Redis, mlflow server, Prefect server
    "tests/server/": "servers",
}
SHARED_STATE_FIXTURES = {
    "postgres": "servers",
    "redis_server": "servers",
    "mlflow_server": "servers",
    "prefect_server": "servers",
}


# The units that take longest, longest first (`--durations` of `make test`): starting them
# first lets the short ones fill the other worker's time instead of trailing at the end.
LONGEST_UNITS = [
    "tests/e2e/test_canary.py",
    # builds the session's shared state (online_state) early, while the other worker is busy
    "tests/e2e/test_main_job.py",
    "tests/e2e/test_soak.py",
    "servers",
    "tests/integration/test_warehouse_invariant.py",
    "tests/integration/test_warehouse_property.py",
]


def work_unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    for prefix, unit in SHARED_STATE_UNITS.items():
        if module == prefix or (prefix.endswith("/") and module.startswith(prefix)):
            return unit
    return module


def pytest_configure(config: pytest.Config) -> None:
    """The session's folder for what its workers share (the Prefect server's record), made by
    the process that runs the session; and, on an xdist worker, one torch (OpenMP) thread
    unless the caller chose a number.

    Two workers on two cores each training with two OpenMP threads oversubscribe the CPU, and
    OpenMP's spinning threads pay for it: two training-heavy test modules run side by side took
    52 s with the default threads and 42 s with one. Set before torch is imported, so the
    workers' torch and every subprocess they start (the CLI, the flows) read it. A run without
    xdist (TEST_WORKERS=0) keeps torch's default.
    """
    if hasattr(config, "workerinput"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
        return
    create_session_folder()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the session's folder stops what the workers started in it."""
    if hasattr(config, "workerinput") or SESSION_DIR_ENV not in os.environ:
        return
    folder = Path(os.environ.pop(SESSION_DIR_ENV))
    stop_shared_server(folder)
    remove_session_folder(folder)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module that starts using a shared session state must join that state's unit; the
    longest units go first (``LONGEST_UNITS``), every unit's tests staying together."""
    for item in items:
        for fixture in item.fixturenames:
            unit = SHARED_STATE_FIXTURES.get(fixture)
            if unit is not None and work_unit(item.nodeid) != unit:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the session state {fixture!r}: add its module to "
                    f"SHARED_STATE_UNITS as {unit!r} in tests/conftest.py"
                )
    rank = {unit: k for k, unit in enumerate(LONGEST_UNITS)}
    order = {item.nodeid: k for k, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(work_unit(item.nodeid), len(rank)), order[item.nodeid]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Whole units to the workers in the order collected (longest first, so the last unit to
    finish is a short one), each worker asking for the next when its own runs out."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedStateScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # xdist would put the units with most tests first
    return SharedStateScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("rankflow-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKFLOW_HOME", str(home))
        # Telemetry would try the network, which CI does not have.
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("DO_NOT_TRACK", "1")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        mp.setenv("FEAST_USAGE", "False")
        mp.setenv("PREFECT_HOME", str(home / "prefect"))
        yield


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StatePaths:
    """A state dir of the test's own (``tmp_path/home``, created) on the embedded defaults:
    RANKFLOW_HOME points at it, and no tracking server, profile or online-store choice of the
    caller's environment leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RANKFLOW_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "RANKFLOW_PROFILE", "RANKFLOW_FEAST_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return StatePaths(home)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's one Prefect API server (``tests/fixtures/prefect_server.py``) for every
    test that runs a real flow, in process or in a ``rankflow`` subprocess (``PREFECT_API_URL``
    is exported, so they start no temporary server of their own), with a temporary Prefect
    home (results) for this worker."""
    from prefect.settings import temporary_settings

    api_url = shared_api_url()
    home = tmp_path_factory.mktemp("prefect-home")
    settings = {
        "home": home,
        "api.url": api_url,
        "results.local_storage_path": home / "storage",
        "server.analytics_enabled": False,
    }
    with pytest.MonkeyPatch.context() as mp, temporary_settings(updates=settings):
        mp.setenv("PREFECT_API_URL", api_url)
        yield api_url


@pytest.fixture(scope="session")
def online_state(prefect_api: str) -> dict[str, Any]:
    """The session's built state with a champion (tests/fixtures/online_state.py), built once
    for all workers; read it, never change it (``online_copy`` is a private copy)."""
    from tests.fixtures import online_state as online
    from tests.fixtures.session import build_once

    record = build_once("online-state", online.build)
    return {**record, "home": Path(record["home"])}


@pytest.fixture
def online_copy(online_state: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A private copy of the online state (its MLflow store and Feast online store with it)."""
    import shutil

    from tests.fixtures.state_copy import copy_state

    home = tmp_path / "home"
    copy_state(online_state["home"], home, ignore=shutil.ignore_patterns("logs", "reports"))
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return {**online_state, "home": home, "tracking_uri": uri}
