"""The server profile's promotion lock: a Postgres advisory lock on a real PostgreSQL 15.

Processes on different machines share only the database, so the lock lives there; these tests
hold it from separate connections (as separate processes would), kill a holder, and run
concurrent read-modify-write promotions against a real ``mlflow server`` on the same Postgres.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rankflow.errors import LockedError
from rankflow.registry.lock import PostgresAdvisoryLock, promotion_lock
from rankflow.settings import Settings
from tests.fixtures.lock_holder import lock_held_elsewhere

pytestmark = pytest.mark.server


def test_second_session_is_refused_until_the_first_releases(postgres) -> None:
    url = postgres.url("rankflow")
    first = PostgresAdvisoryLock(url, "promotion of m", timeout=0)
    second = PostgresAdvisoryLock(url, "promotion of m", timeout=0)
    other = PostgresAdvisoryLock(url, "promotion of another model", timeout=0)
    with first:
        with pytest.raises(LockedError, match=r"promotion of m: .* held by database backend pid"):
            second.acquire()
        with other:  # a different name is a different lock
            pass
    with second:
        pass


def test_a_holder_that_dies_releases_the_lock(postgres) -> None:
    url = postgres.url("rankflow")
    with (
        lock_held_elsewhere(f"PostgresAdvisoryLock({url!r}, 'promotion of m')"),
        pytest.raises(LockedError),
    ):
        PostgresAdvisoryLock(url, "promotion of m", timeout=0.5).acquire()
    # Postgres ends the killed client's session, and its advisory locks with it.
    with PostgresAdvisoryLock(url, "promotion of m", timeout=30):
        pass


def test_an_unreachable_database_is_a_one_line_locked_error() -> None:
    lock = PostgresAdvisoryLock("postgresql://nobody@127.0.0.1:9/none", "promotion of m")
    with pytest.raises(LockedError, match="cannot reach the lock database") as caught:
        lock.acquire()
    assert "\n" not in str(caught.value)


def test_concurrent_promotions_on_the_mlflow_server_lose_no_update(
    postgres, mlflow_server, tmp_path: Path
) -> None:
    """Read-modify-write of a registry tag from 4 threads x 5 rounds, each round under the lock
    from its own connection: every increment survives (MLflow itself has no compare-and-set)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    model = "lock-test-model"
    client.create_registered_model(model, tags={"counter": "0"})
    # Built by hand: only the lock is under test (no Redis or Prefect server, which
    # Settings.resolve requires of a server profile).
    settings = Settings(
        home=tmp_path, profile="server", postgres_url=postgres.url("rankflow", "psycopg")
    )
    errors: list[BaseException] = []

    def promote_five_times() -> None:
        try:
            for _ in range(5):
                with promotion_lock(settings, model, timeout=120):
                    seen = int(client.get_registered_model(model).tags["counter"])
                    client.set_registered_model_tag(model, "counter", str(seen + 1))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=promote_five_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert client.get_registered_model(model).tags["counter"] == "20"
