"""A state remembers what built it: ``rankflow build-features`` on a tiny state built with one
simulation override, run again as a user would (the CLI, the real flow, dbt and Feast).

Asked for another value, the command refuses in one line and leaves every built file as it
was; asked for nothing, it works on the state as built; ``--rebuild`` rebuilds it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rankflow.paths import REPO_ROOT, StatePaths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = [
    "simulation.n_users=200",
    "simulation.n_items=60",
    "simulation.days=6",
    "simulation.end_date=2026-03-07",
]
IMPRESSIONS = 3000


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _rankflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RANKFLOW_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "rankflow", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _impressions(paths: StatePaths) -> int:
    files = (paths.raw / "impressions").rglob("*.parquet")
    return sum(pq.read_metadata(f).num_rows for f in files)


def _files(paths: StatePaths) -> dict[str, int]:
    """Every built file (raw, truth, warehouse, exports, online store) and its mtime."""
    roots = (paths.raw, paths.truth, paths.warehouse.parent, paths.exports, paths.feast)
    return {
        str(f.relative_to(paths.root)): f.stat().st_mtime_ns
        for root in roots
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def built(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    """``rankflow --set ... --set simulation.n_impressions=3000 build-features``."""
    paths = StatePaths(tmp_path_factory.mktemp("built-with") / "home")
    sets = _sets(*TINY, f"simulation.n_impressions={IMPRESSIONS}")
    run = _rankflow(paths.root, *sets, "build-features")
    assert run.returncode == 0, run.stderr[-3000:]
    return paths


def test_the_build_records_what_it_was_built_with(built: StatePaths) -> None:
    record = json.loads(built.built_with.read_text())
    assert record["settings"]["simulation.n_impressions"] == IMPRESSIONS
    assert record["settings"]["simulation.n_users"] == 200
    assert record["file_settings"]["simulation.n_impressions"] == 1_000_000
    assert record["built"]["simulation"]["by"] == "build-features"
    assert record["built"]["simulation"]["git_sha"]
    assert _impressions(built) == pytest.approx(IMPRESSIONS, rel=0.05)


def test_another_value_refuses_in_one_line_and_changes_nothing(built: StatePaths) -> None:
    files, record = _files(built), built.built_with.read_bytes()
    assert any(name.startswith("warehouse/") for name in files)
    rows = _impressions(built)

    sets = _sets(*TINY, "simulation.n_impressions=4000")
    refused = _rankflow(built.root, *sets, "build-features")

    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    (line,) = lines
    assert f"simulation.n_impressions={IMPRESSIONS}" in line
    assert "simulation.n_impressions=4000 (from --set)" in line and "--rebuild" in line
    assert "simulation.n_users" not in line  # the same as built: not named
    assert _files(built) == files  # not one built file touched
    assert built.built_with.read_bytes() == record
    assert _impressions(built) == rows


def test_the_same_command_without_the_override_works_on_the_state_as_built(
    built: StatePaths,
) -> None:
    """``make canary`` after a run with ``--set``: no value asked for, the state's are used."""
    rows = _impressions(built)
    run = _rankflow(built.root, "build-features")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _impressions(built) == rows  # not re-simulated at the default million
    record = json.loads(built.built_with.read_text())
    assert record["settings"]["simulation.n_impressions"] == IMPRESSIONS
    (summary,) = sorted(built.runs.glob("*-build-features-*/summary.json"))[-1:]
    details = json.loads(summary.read_text())["details"]
    assert details["config"]["simulation.n_impressions"] == IMPRESSIONS  # recorded as used


def test_rebuild_builds_with_the_new_value(built: StatePaths) -> None:
    sets = _sets(*TINY, "simulation.n_impressions=4000")
    run = _rankflow(built.root, *sets, "simulate", "--rebuild")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _impressions(built) == pytest.approx(4000, rel=0.05)
    record = json.loads(built.built_with.read_text())
    assert record["settings"]["simulation.n_impressions"] == 4000
    assert record["built"]["simulation"]["by"] == "simulate"
    assert record["built"]["warehouse"]["by"] == "build-features"  # not rebuilt by simulate
