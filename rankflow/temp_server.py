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

import atexit
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
        notes, killed = reap_orphans(record)
    server = SubprocessASGIServer()
    server.start(timeout=180)  # a loaded machine needs more than the default 20 s
    if server.server_process is None:
        return notes
    server_pid, owner = server.server_process.pid, os.getpid()
    with exclusive(record.with_suffix(".lock"), "temporary server record", wait_seconds=30):
        others_alive = bool(_read(record))
        _write(record, [*_read(record), {"server_pid": server_pid, "owner_pid": owner}])
    atexit.register(_forget, record, owner)  # a clean exit leaves no record behind
    subprocess.Popen(
        [sys.executable, "-m", "rankflow.temp_server", str(owner), str(server_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives a kill of the owner's process group
    )
    if killed and not others_alive:  # only a killed run can have left flow runs RUNNING here
        notes += mark_crashed_runs()
    return notes


def mark_crashed_runs() -> list[str]:
    """Flow runs left RUNNING by a killed process become CRASHED (the engine never got to it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    )
    notes = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_run_filter=running):
            message = "its process was killed; marked by the next run"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            notes.append(f"flow run {run.name} ({run.id}) was left RUNNING: marked CRASHED")
    return notes


def reap_orphans(record: Path) -> tuple[list[str], bool]:
    """Stop every recorded server whose owner is dead (a clean exit removes its record, so a
    dead owner was killed); keep the records of live owners. Returns notes and whether any
    killed run was found."""
    notes, alive, killed = [], [], False
    for entry in _read(record):
        owner, server = int(entry["owner_pid"]), int(entry["server_pid"])
        if _alive(owner):
            alive.append(entry)
            continue
        killed = True
        if is_prefect_server(server):
            stop(server)
            notes.append(
                f"stopped Prefect temporary server pid {server} left running by a killed run "
                f"(pid {owner})"
            )
    _write(record, alive)
    return notes, killed


def _forget(record: Path, owner: int) -> None:
    with exclusive(record.with_suffix(".lock"), "temporary server record", wait_seconds=30):
        _write(record, [e for e in _read(record) if int(e["owner_pid"]) != owner])


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
