"""The promotion lock's local implementation (a file lock) and how the profile picks one.

The Postgres implementation runs against a real server in tests/server/test_promotion_lock.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.errors import ConfigError, LockedError
from rankflow.registry.lock import (
    FileLock,
    PostgresAdvisoryLock,
    advisory_key,
    libpq_url,
    promotion_lock,
)
from rankflow.settings import Settings
from tests.fixtures.lock_holder import lock_held_elsewhere


def test_local_profile_uses_a_file_lock_under_the_state_dir(tmp_path: Path) -> None:
    lock = promotion_lock(Settings.resolve(home=tmp_path, environ={}), "rankflow-ctr")
    assert isinstance(lock, FileLock)
    assert lock.path == tmp_path / "locks" / "promotion-rankflow-ctr.lock"


def test_server_profile_uses_postgres_and_needs_its_url(tmp_path: Path) -> None:
    # Settings.resolve refuses a server profile without its URL (tests/unit/test_settings.py);
    # the lock still guards settings built by hand.
    server = Settings(home=tmp_path, profile="server")
    with pytest.raises(ConfigError, match="RANKFLOW_POSTGRES_URL"):
        promotion_lock(server, "rankflow-ctr")
    url = "postgresql+psycopg://u:p@db:5432/rankflow"
    lock = promotion_lock(server.replace(postgres_url=url), "rankflow-ctr")
    assert isinstance(lock, PostgresAdvisoryLock)
    assert lock.url == "postgresql://u:p@db:5432/rankflow"


def test_advisory_keys_are_stable_signed_64_bit_and_differ_by_name() -> None:
    key = advisory_key("promotion of rankflow-ctr")
    assert key == advisory_key("promotion of rankflow-ctr")
    assert -(2**63) <= key < 2**63
    assert key != advisory_key("promotion of other-model")
    assert libpq_url("postgresql://a@b/c") == "postgresql://a@b/c"
    assert libpq_url("postgres+asyncpg://a@b/c") == "postgresql://a@b/c"


def test_file_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    first, second = FileLock(path, "x", timeout=0), FileLock(path, "x", timeout=0)
    with first, pytest.raises(LockedError, match=r"x: .*x\.lock is held by pid \d+"):
        second.acquire()
    with second:  # released by the first `with`
        assert "pid" in path.read_text()
    assert path.read_text() == ""  # the holder's note is cleared on release


def test_file_lock_excludes_another_process_and_is_freed_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with (
        lock_held_elsewhere(f"FileLock(Path({str(path)!r}), 'x')") as holder,
        pytest.raises(LockedError, match=f"pid {holder.pid}"),
    ):
        FileLock(path, "x", timeout=0.5).acquire()
    # The holder died holding the lock: the kernel drops the flock with the process.
    with FileLock(path, "x", timeout=5):
        pass
