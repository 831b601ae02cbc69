"""Per-state locks: a second holder fails at once (one line) or waits; a killed holder frees it.
Training takes the state's lock with the embedded store, a family's own with a tracking server."""

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


def hold_in_child(root: Path, family: str | None = None) -> subprocess.Popen[str]:
    """A child process that takes the training lock (of ``family``: None, the state's), says
    so, and sleeps until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from rankflow.locks import training_lock
        from rankflow.paths import StatePaths
        from pathlib import Path
        with training_lock(StatePaths(Path({str(root)!r})), {family!r}):
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


def test_a_familys_lock_holds_that_family_only(tmp_path: Path) -> None:
    """Families share no checkpoints or versions: the Dask option trains them at once."""
    child = hold_in_child(tmp_path, "dcn")
    try:
        busy = r"^training dcn is already running \(pid "
        with pytest.raises(LockedError, match=busy), training_lock(StatePaths(tmp_path), "dcn"):
            pass
        with training_lock(StatePaths(tmp_path), "wide_deep"):
            pass
    finally:
        child.kill()
        child.wait()


def test_trainings_take_the_states_lock_with_the_embedded_store_a_familys_with_a_server(
    tmp_path: Path,
) -> None:
    from rankflow.tracking.setup import default_tracking_uri
    from rankflow.training.step import lock_family

    assert lock_family("dcn", default_tracking_uri(StatePaths(tmp_path))) is None
    assert lock_family("dcn", "http://mlflow:5000") == "dcn"
