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
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.path, self.name, self.timeout = path, name, max(timeout, 0.0)
        self._busy = busy or (
            lambda holder: f"{name}: {path} is held by {holder} (waited {self.timeout:.0f} s)"
        )
        self._fd: int | None = None
        # Told once when the lock is busy and this waits for it, so a queued run does not look
        # hung (e.g. ``note=log.info``).
        self._note = note

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
                    self._note(
                        f"{self.name}: {self._holder()} holds {self.path}; waiting up to "
                        f"{self.timeout:.0f} s for it"
                    )
                    noted = True
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    raise LockedError(self._busy(holder)) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.write(fd, holder_text().encode())
        self._fd = fd

    def _holder(self) -> str:
        return self.path.read_text(errors="replace").strip() or "another process"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def exclusive(
    lock_path: Path,
    what: str,
    *,
    wait_seconds: float = 0.0,
    note: Callable[[str], None] | None = None,
) -> FileLock:
    """Hold ``lock_path`` for ``what``; raise ``LockedError`` if another process holds it
    (after waiting up to ``wait_seconds``, saying so once through ``note``)."""
    return FileLock(
        lock_path,
        what,
        wait_seconds,
        busy=lambda holder: (
            f"{what} is already running ({holder} holds {lock_path}); wait for it to finish"
        ),
        note=note,
    )


# How long a training run (``train`` or a canary) queues behind another one before it gives up.
TRAINING_WAIT_SECONDS = 3600.0


def training_lock(
    paths: StatePaths,
    family: str | None = None,
    *,
    wait_seconds: float = 0.0,
    note: Callable[[str], None] | None = None,
) -> FileLock:
    """One training per state dir at a time; with ``family``, one training of that model family.

    Runs of a family share its ``training/<family>/<fingerprint>`` checkpoints and registry
    versions, so a second one would delete the first one's checkpoint or register the same model
    twice. :func:`rankflow.training.step.train_and_register` takes the lock (callers do not) and
    chooses which: one per family with a tracking server, where families train at once (the
    Dask option); the state's with the embedded SQLite store, which takes one writer."""
    what, file = ("training", "training.lock")
    if family is not None:
        what, file = f"training {family}", f"training-{family}.lock"
    return exclusive(paths.locks / file, what, wait_seconds=wait_seconds, note=note)


def warehouse_lock(paths: StatePaths) -> FileLock:
    """One warehouse build per state dir (they share the scratch copy and the swap)."""
    return exclusive(paths.warehouse.parent / ".build.lock", "warehouse build")
