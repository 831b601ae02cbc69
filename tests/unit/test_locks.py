"""Per-state locks: a second holder fails at once (one line) or waits; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rankflow.errors import LockedError, RankflowError
from rankflow.locks import training_lock
from rankflow.paths import StatePaths


def hold_in_child(root: Path) -> subprocess.Popen[str]:
    """A child process that takes the training lock, says so, and sleeps until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from rankflow.locks import training_lock
        from rankflow.paths import StatePaths
        from pathlib import Path
        with training_lock(StatePaths(Path({str(root)!r}))):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_training_run_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    try:
        with pytest.raises(LockedError) as caught, training_lock(StatePaths(tmp_path)):
            pass
        message = str(caught.value)
        assert isinstance(caught.value, RankflowError)
        assert "\n" not in message
        assert message.startswith(f"training is already running (pid {child.pid} holds ")
    finally:
        child.kill()
        child.wait()


def test_kill_9_of_the_holder_releases_the_lock(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with training_lock(StatePaths(tmp_path)):  # no stale lock to clean up by hand
        pass


def test_a_waiting_run_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    child.terminate()  # ends while the second run waits; the wait is bounded, not timed
    with training_lock(StatePaths(tmp_path), wait_seconds=60):
        assert child.wait() != 0


def test_a_queued_run_says_whom_it_waits_for_once(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        child.kill()  # the holder goes away once the waiter has said it waits

    with training_lock(StatePaths(tmp_path), wait_seconds=60, note=note):
        pass
    child.wait()
    assert len(notes) == 1
    assert notes[0].startswith(f"training: pid {child.pid} holds ")
    assert "waiting up to 60 s" in notes[0]


def test_no_wait_note_when_the_lock_is_free(tmp_path: Path) -> None:
    notes: list[str] = []
    with training_lock(StatePaths(tmp_path), wait_seconds=60, note=notes.append):
        pass
    assert notes == []
