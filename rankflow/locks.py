"""Per-state-directory locks on shared resources (warehouse build, training), by ``flock``.

A lock is a file under the state dir held with ``fcntl.flock``: the kernel releases it when the
holder exits, however it exits (``kill -9`` included), so a crashed run never leaves a stale
lock behind. The second run either fails at once with a one-line ``LockedError`` naming the
resource and the holder, or waits up to ``wait_seconds`` for it. Two processes on one machine
only: ``flock`` is not reliable on network file systems.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from rankflow.errors import LockedError
from rankflow.paths import StatePaths

_POLL_SECONDS = 0.2


def holder_text() -> str:
    """Who holds a lock, as written into the lock file (flock is per machine: the pid suffices)."""
    return f"pid {os.getpid()}"


class FileLock:
    """``flock`` on ``path`` for ``name``: ``with FileLock(...):`` or ``acquire()`` / ``release()``.

    Waits up to ``timeout`` seconds (0: not at all), then raises ``LockedError`` with
    ``busy(holder)`` as its message (default: the lock's name, path and holder)."""

    def __init__(
        self,
        path: Path,
        name: str,
        timeout: float = 0.0,
        *,
        busy: Callable[[str], str] | None = None,
    ) -> None:
        self.path, self.name, self.timeout = path, name, max(timeout, 0.0)
        self._busy = busy or (
            lambda holder: f"{name}: {path} is held by {holder} (waited {self.timeout:.0f} s)"
        )
        self._fd: int | None = None
        self._note: Callable[[str], None] | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.name}: already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        noted = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not noted and self._note is not None and self.timeout > 0:
                    holder = self.path.read_text(errors="replace").strip() or "another process"
                    self._note(
                        f"{self.name}: {holder} holds {self.path}; waiting up to "
                        f"{self.timeout:.0f} s for it"
                    )
                    noted = True
                if time.monotonic() >= deadline:
                    holder = self.path.read_text(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise LockedError(self._busy(holder)) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, holder_text().encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def waiting(self, note: Callable[[str], None]) -> FileLock:
        """This lock, saying through ``note`` that it waits when another process holds it
        (``with lock.waiting(log.info):``), so a queued run does not look hung."""
        self._note = note
        return self

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def exclusive(lock_path: Path, what: str, *, wait_seconds: float = 0.0) -> FileLock:
    """Hold ``lock_path`` for ``what``; raise ``LockedError`` if another process holds it
    (after waiting up to ``wait_seconds``)."""
    return FileLock(
        lock_path,
        what,
        wait_seconds,
        busy=lambda holder: (
            f"{what} is already running ({holder} holds {lock_path}); wait for it to finish"
        ),
    )


# How long a training run (``train`` or a canary) queues behind another one before it gives up.
TRAINING_WAIT_SECONDS = 3600.0


def training_lock(paths: StatePaths, *, wait_seconds: float = 0.0) -> FileLock:
    """One training run per state dir: runs share ``training/<kind>/<fingerprint>`` checkpoints
    and the registry, so a second one would delete the first one's checkpoint or log twice."""
    return exclusive(paths.root / "locks" / "training.lock", "training", wait_seconds=wait_seconds)


def warehouse_lock(paths: StatePaths) -> FileLock:
    """One warehouse build per state dir (they share the scratch copy and the swap)."""
    return exclusive(paths.warehouse.parent / ".build.lock", "warehouse build")
