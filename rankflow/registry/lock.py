"""The promotion lock: one process at a time reads and moves a serving model's aliases.

MLflow has no compare-and-set on aliases (``set_registered_model_alias`` is an upsert), so two
runs deciding a promotion at once (a canary and a scheduled train, two canaries) could both see
the same champion and both move it. Whoever decides and applies a promotion holds this lock and
re-reads the aliases inside it.

One small interface, two implementations chosen by the settings (never by the caller):

- local profile: :class:`FileLock`, an ``flock`` on ``<home>/locks/promotion-<model>.lock``,
  which serialises the processes sharing one state directory (the embedded stores are there);
- server profile: :class:`PostgresAdvisoryLock`, ``pg_try_advisory_lock`` on the settings'
  Postgres, which serialises processes on any machine. The lock belongs to the database
  session, so a process that dies mid-promotion releases it with its connection.

Both wait up to ``timeout`` seconds (0: do not wait), then raise
:class:`~rankflow.errors.LockedError` naming the lock and who holds it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from rankflow.errors import ConfigError, LockedError
from rankflow.locks import FileLock
from rankflow.settings import Settings

POLL_SECONDS = 0.2
DEFAULT_TIMEOUT = 60.0


class PromotionLock(Protocol):
    """A re-entrant-free, cross-process mutual exclusion used as a context manager."""

    name: str

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _ContextManager:
    """``with lock:`` = acquire ... release."""

    def __enter__(self) -> Self:
        self.acquire()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # type: ignore[attr-defined]


def _wait(try_once: Callable[[], bool], timeout: float) -> bool:
    """Call ``try_once()`` until it returns True or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not try_once():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from the lock's name."""
    digest = hashlib.sha256(f"rankflow:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy form) -> ``postgresql://...`` (libpq form)."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)


class PostgresAdvisoryLock(_ContextManager):
    """A session-level Postgres advisory lock: for processes on any machine (server profile)."""

    def __init__(self, url: str, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url, self.name, self.timeout = libpq_url(url), name, timeout
        self.key = advisory_key(name)
        self._connection: Any = None

    def acquire(self) -> None:
        import psycopg

        if self._connection is not None:
            raise RuntimeError(f"{self.name}: already held by this object")
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise LockedError(f"{self.name}: cannot reach the lock database: {first}") from error

        def try_once() -> bool:
            row = connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            return bool(row and row[0])

        if not _wait(try_once, self.timeout):
            # a bigint key shows in pg_locks as (classid, objid) = (high, low) 32 bits
            high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
            holder = connection.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
                (high, low),
            ).fetchone()
            connection.close()
            who = f"database backend pid {holder[0]}" if holder else "another session"
            raise LockedError(
                f"{self.name}: advisory lock {self.key} is held by {who} "
                f"(waited {self.timeout:.0f} s)"
            )
        self._connection = connection

    def release(self) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        try:
            connection.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            connection.close()  # closing the session releases it in any case


def promotion_lock(
    settings: Settings, model_name: str, *, timeout: float = DEFAULT_TIMEOUT
) -> PromotionLock:
    """The lock guarding ``model_name``'s aliases in the profile ``settings`` describe."""
    name = f"promotion of {model_name}"
    if settings.profile == "server":
        if not settings.postgres_url:
            raise ConfigError(
                "settings.postgres_url: the server profile's promotion lock is a Postgres "
                "advisory lock; set RANKFLOW_POSTGRES_URL (postgresql://user:pass@host/db)"
            )
        return PostgresAdvisoryLock(settings.postgres_url, name, timeout)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return FileLock(settings.paths.locks / f"promotion-{safe}.lock", name, timeout)
