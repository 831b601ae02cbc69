"""Shared test setup: every test session gets its own state directory.

Nothing a test generates may land in the checkout's .state/, so the session points
RANKFLOW_HOME (and the tools' own homes) at a temporary folder before any test runs; tests that
need a private state dir still set RANKFLOW_HOME themselves with monkeypatch.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's temporary server and a temporary home (results, database) for the session,
    shared by every test that runs a real flow."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    settings = {
        "home": home,
        "results.local_storage_path": home / "storage",
        "server.analytics_enabled": False,
    }
    with temporary_settings(updates=settings), prefect_test_harness(server_startup_timeout=180):
        yield
