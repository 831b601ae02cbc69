"""Shared test setup: every test session gets its own state directory.

Nothing a test generates may land in the checkout's .state/, so the session points
RANKFLOW_HOME (and the tools' own homes) at a temporary folder before any test runs; tests that
need a private state dir still set RANKFLOW_HOME themselves with monkeypatch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankflow.paths import StatePaths

# `make test` runs the suite on two pytest-xdist workers. A work unit is a test module, so a
# module-scoped state (the canary scenario, the main job's run) is built once; modules that share
# a session-scoped state form one unit, so that state is built once too. (xdist's own
# `--dist loadgroup` does not work with pytest 9: it renames node ids through an attribute
# pytest 9 no longer reads, so every test became its own unit.)
SHARED_STATE_UNITS = {  # module (or folder) -> work unit
    # online_state (below): a built state with a champion
    "tests/e2e/test_online.py": "online-state",
    "tests/integration/test_canary_flow.py": "online-state",
    "tests/integration/test_canary_live.py": "online-state",
    "tests/integration/test_gap_checks.py": "online-state",
    "tests/integration/test_serving.py": "online-state",
    # tests/server/conftest.py: PostgreSQL, Redis, mlflow server, Prefect server
    "tests/server/": "servers",
}
SHARED_STATE_FIXTURES = {
    "online_state": "online-state",
    "postgres": "servers",
    "redis_server": "servers",
    "mlflow_server": "servers",
    "prefect_server": "servers",
}


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
    from tests.fixtures.prefect_server import SESSION_DIR_ENV, owner_record

    folder = Path(tempfile.mkdtemp(prefix="rankflow-tests-"))
    owner_record(folder)
    os.environ[SESSION_DIR_ENV] = str(folder)  # before xdist starts the workers: they inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the session's folder stops what the workers started in it."""
    from tests.fixtures.prefect_server import SESSION_DIR_ENV, stop_shared_server

    if hasattr(config, "workerinput") or SESSION_DIR_ENV not in os.environ:
        return
    folder = Path(os.environ.pop(SESSION_DIR_ENV))
    stop_shared_server(folder)
    shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module that starts using a shared session state must join that state's unit."""
    for item in items:
        for fixture in item.fixturenames:
            unit = SHARED_STATE_FIXTURES.get(fixture)
            if unit is not None and work_unit(item.nodeid) != unit:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the session state {fixture!r}: add its module to "
                    f"SHARED_STATE_UNITS as {unit!r} in tests/conftest.py"
                )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class SharedStateScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

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

    from tests.fixtures.prefect_server import SESSION_DIR_ENV, shared_api_url

    api_url = shared_api_url(Path(os.environ[SESSION_DIR_ENV]))
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


# A small built state with a champion (and a second registered version of the serving model),
# shared by the online tests (tests/integration/test_serving.py, test_gap_checks.py,
# tests/e2e/test_online.py). Built once per session and only when asked for; tests that change
# it work on a copy (``copy_online_state``).
ONLINE_SIMULATION = {
    "n_users": 400,
    "n_items": 150,
    "n_impressions": 30000,
    "days": 10,
    "end_date": "2026-03-11",
}
ONLINE_GATES = {
    "min_auc": 0.55,
    "max_ne": 1.0,
    "max_ece": 0.1,
    "calibration_ratio": [0.5, 2.0],
    "min_auc_lift_over_baseline": None,
}


@pytest.fixture(scope="session")
def online_state(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from mlflow import MlflowClient

    from rankflow.config import parse_config
    from rankflow.features.store import refresh_online_store
    from rankflow.paths import StatePaths
    from rankflow.sim.simulate import simulate
    from rankflow.tracking.setup import default_tracking_uri
    from rankflow.training.step import train_and_register
    from rankflow.warehouse.build import build_warehouse

    home = tmp_path_factory.mktemp("online-state")
    paths = StatePaths(home)
    config = parse_config(
        {
            "simulation": ONLINE_SIMULATION,
            "training_set": {"valid_days": 2, "test_days": 2},
            "registry": {"gates": ONLINE_GATES},
        }
    )
    # mlflow.set_tracking_uri (any earlier in-process training) exports MLFLOW_TRACKING_URI,
    # which would win over this state's own store: pin it for the build.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKFLOW_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(paths))
        simulate(config.simulation, paths.raw, paths.truth)
        build_warehouse(paths, vars=config.warehouse.model_dump(), raw_dir=paths.raw)
        refresh_online_store(paths)
        outcome = train_and_register(config, paths, model_overrides={"training.max_epochs": 2})
    champion = outcome.champion_version
    assert champion is not None, outcome.decision
    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    champion_kind = client.get_model_version(outcome.serving_model, champion).tags[
        "rankflow.model_kind"
    ]
    other = next(c for k, c in outcome.candidates.items() if k != champion_kind)
    family = client.get_model_version(other.registered_model, other.version)
    second = client.create_model_version(
        outcome.serving_model,
        family.source,
        run_id=family.run_id,
        model_id=getattr(family, "model_id", None),
        tags={"rankflow.model_kind": other.kind},
    )
    return {
        "home": home,
        "simulation": ONLINE_SIMULATION,
        "gates": ONLINE_GATES,
        "champion": str(champion),
        "other": str(second.version),
        "tracking_uri": outcome.tracking_uri,
        "model": outcome.serving_model,
    }


@pytest.fixture
def online_copy(online_state: dict, tmp_path) -> dict:
    """A private copy of the online state (its MLflow store and Feast online store with it)."""
    import shutil

    from tests.fixtures.state_copy import copy_state

    state = online_state
    home = tmp_path / "home"
    copy_state(state["home"], home, ignore=shutil.ignore_patterns("logs", "reports"))
    return {**state, "home": home, "tracking_uri": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"}
