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
from collections.abc import Iterator
from pathlib import Path

from rankflow.errors import LockedError
from rankflow.paths import StatePaths

_POLL_SECONDS = 0.5


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str, *, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold ``lock_path`` for ``what``; raise ``LockedError`` if another process holds it
    (after waiting up to ``wait_seconds``)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(wait_seconds, 0.0)
    with open(lock_path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise LockedError(
                        f"{what} is already running ({holder} holds {lock_path}); "
                        "wait for it to finish"
                    ) from None
                time.sleep(_POLL_SECONDS)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def training_lock(
    paths: StatePaths, *, wait_seconds: float = 0.0
) -> contextlib.AbstractContextManager[None]:
    """One training run per state dir: runs share ``training/<kind>/<fingerprint>`` checkpoints
    and the registry, so a second one would delete the first one's checkpoint or log twice."""
    return exclusive(paths.root / "locks" / "training.lock", "training", wait_seconds=wait_seconds)


def warehouse_lock(paths: StatePaths) -> contextlib.AbstractContextManager[None]:
    """One warehouse build per state dir (they share the scratch copy and the swap)."""
    return exclusive(paths.warehouse.parent / ".build.lock", "warehouse build")
