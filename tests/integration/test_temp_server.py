"""Prefect's temporary server does not outlive a killed flow process: a watchdog stops it, and
a server whose watchdog was killed too is stopped by the next run, with a note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rankflow.temp_server import RECORD_NAME, SERVER_MARKER, _alive, reap_orphans

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_until_gone(pid: int, limit_seconds: float = 120) -> bool:
    """Poll (bounded) until ``pid`` is gone; the bound only stops a hung test."""
    deadline = time.monotonic() + limit_seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return not _alive(pid)


def test_a_server_left_by_a_dead_owner_is_stopped_with_a_note(tmp_path: Path) -> None:
    fake_server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", SERVER_MARKER]
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = tmp_path / RECORD_NAME
    entries = [
        {"server_pid": fake_server.pid, "owner_pid": gone.pid},  # owner dead: stop it
        {"server_pid": other.pid, "owner_pid": os.getpid()},  # owner alive: keep it
    ]
    record.write_text(json.dumps(entries))
    try:
        notes, killed = reap_orphans(record)
        assert killed
        assert fake_server.wait(timeout=60) is not None
        assert notes == [
            f"stopped Prefect temporary server pid {fake_server.pid} left running by a killed "
            f"run (pid {gone.pid})"
        ]
        assert other.poll() is None  # not a Prefect server, and its owner lives: untouched
        assert json.loads(record.read_text()) == [entries[1]]
    finally:
        for child in (fake_server, other):
            child.kill()
            child.wait()


def test_kill_9_of_the_flow_process_stops_its_temporary_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    code = textwrap.dedent(
        """
        import time
        from prefect.server.api.server import SubprocessASGIServer
        from rankflow.temp_server import guard_temporary_server
        guard_temporary_server()
        print(SubprocessASGIServer().server_process.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert owner.stdout is not None
    server_pid = int(owner.stdout.readline())
    try:
        assert _alive(server_pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert wait_until_gone(server_pid)
    finally:
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_flow_run_left_running_by_a_kill_is_marked_crashed_by_the_next_run(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    killed = textwrap.dedent(
        """
        import time
        from prefect import flow
        from prefect.server.api.server import SubprocessASGIServer
        from rankflow.temp_server import guard_temporary_server
        guard_temporary_server()

        @flow(name="sleeper")
        def sleeper():
            print(SubprocessASGIServer().server_process.pid, flush=True)
            time.sleep(600)

        sleeper()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", killed], stdout=subprocess.PIPE, text=True, env=env
    )
    assert owner.stdout is not None
    server_pid = int(owner.stdout.readline())
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert wait_until_gone(server_pid)

    next_run = textwrap.dedent(
        """
        import json
        from prefect.client.orchestration import get_client
        from rankflow.temp_server import guard_temporary_server
        notes = guard_temporary_server()
        with get_client(sync_client=True) as client:
            states = [r.state.type.value for r in client.read_flow_runs()]
        print(json.dumps({"notes": notes, "states": states}), flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", next_run], capture_output=True, text=True, env=env, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["states"] == ["CRASHED"]
    assert len(report["notes"]) == 1 and "was left RUNNING: marked CRASHED" in report["notes"][0]
