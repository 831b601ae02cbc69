"""Prefect's temporary server must not outlive the run that started it.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server in a subprocess and stops it
from an ``atexit`` hook, which never runs when the flow process is killed (``kill -9``, OOM):
the server kept running, holding its port and the state dir's Prefect database. Here:

- ``start_guarded_server`` starts that same server (Prefect's ``SubprocessASGIServer``
  singleton, which the flow engine then reuses), records its pid and its owner's pid under the
  Prefect home, and starts a small watchdog process that stops the server as soon as the
  owner is gone, however it ended;
- before starting, it stops any server a previous run recorded whose owner is dead (the
  watchdog itself may have been killed too) and returns a note saying so.

A recorded pid is only signalled when its command line is Prefect's server app, so a reused
pid of another program is never touched. Linux only (``/proc``), like the rest of the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rankflow.locks import exclusive

SERVER_MARKER = "prefect.server.api.server:create_app"
RECORD_NAME = "temporary-servers.json"
_POLL_SECONDS = 1.0


def guard_temporary_server() -> list[str]:
    """When no Prefect API is configured, ``start_guarded_server`` in Prefect's home; notes."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url:
        return []  # a real server: nothing temporary to guard
    return start_guarded_server(Path(settings.home))


def start_guarded_server(prefect_home: Path) -> list[str]:
    """Stop servers left by killed runs, start the temporary server with a watchdog; notes."""
    from prefect.server.api.server import SubprocessASGIServer

    record = Path(prefect_home) / RECORD_NAME
    with exclusive(record.with_suffix(".lock"), "temporary server record", wait_seconds=30):
        notes = reap_orphans(record)
    server = SubprocessASGIServer()
    server.start()
    if server.server_process is None:
        return notes
    server_pid, owner = server.server_process.pid, os.getpid()
    with exclusive(record.with_suffix(".lock"), "temporary server record", wait_seconds=30):
        _write(record, [*_read(record), {"server_pid": server_pid, "owner_pid": owner}])
    subprocess.Popen(
        [sys.executable, "-m", "rankflow.temp_server", str(owner), str(server_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives a kill of the owner's process group
    )
    return notes


def reap_orphans(record: Path) -> list[str]:
    """Stop every recorded server whose owner is dead; keep the records of live owners."""
    notes, alive = [], []
    for entry in _read(record):
        owner, server = int(entry["owner_pid"]), int(entry["server_pid"])
        if _alive(owner):
            alive.append(entry)
        elif is_prefect_server(server):
            stop(server)
            notes.append(
                f"stopped Prefect temporary server pid {server} left running by a killed run "
                f"(pid {owner})"
            )
    _write(record, alive)
    return notes


def watch(owner: int, server: int) -> None:
    """Wait for ``owner`` to end, then stop ``server`` (if it is still Prefect's server)."""
    while _alive(owner) and _alive(server):
        time.sleep(_POLL_SECONDS)
    if is_prefect_server(server):
        stop(server)


def is_prefect_server(pid: int) -> bool:
    """True when ``pid`` runs Prefect's server app (not some other program reusing the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return SERVER_MARKER.encode() in cmdline


def stop(pid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace_seconds``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not alive
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _read(record: Path) -> list[dict[str, int]]:
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def _write(record: Path, entries: list[dict[str, int]]) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, record)


if __name__ == "__main__":  # the watchdog: python -m rankflow.temp_server OWNER_PID SERVER_PID
    watch(int(sys.argv[1]), int(sys.argv[2]))
