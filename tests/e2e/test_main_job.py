"""The main job as a user runs it: ``python -m rankflow run`` in a fresh process.

Real simulator, contract check, dbt build, feast apply / materialize, point-in-time retrieval
and training on a small dataset (the session's built state is that run:
tests/fixtures/online_state.py); then the failure paths a user meets with their own data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rankflow.paths import REPO_ROOT
from tests.fixtures.online_state import config_args

pytestmark = pytest.mark.e2e


def _rankflow(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RANKFLOW_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "rankflow", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)}


def test_main_job_prints_training_set_shape_and_positive_rate(online_state: dict) -> None:
    """The session's built state is this run: ``rankflow run`` in a fresh process."""
    home, out = online_state["home"], online_state["stdout"]
    for split in ("train", "valid", "test"):
        assert f"training set {split}" in out
    assert "positive rate" in out
    # One summary for the pipeline flow, one for each of its two subflows.
    summary_files = list((home / "runs").glob("*-pipeline-*/summary.json"))
    assert len(summary_files) == 1
    assert len(list((home / "runs").glob("*/summary.json"))) == 3
    summary = json.loads(summary_files[0].read_text())
    splits = summary["details"]["training_set"]["splits"]
    raw_rows = pq.ParquetDataset(home / "raw" / "impressions").read(columns=["event_id"]).num_rows
    assert sum(s["rows"] for s in splits.values()) == raw_rows  # every impression, none lost
    assert all(0.0 < s["positive_rate"] < 0.2 for s in splits.values())
    assert splits["train"]["end"] < splits["valid"]["start"] <= splits["valid"]["end"]
    assert splits["valid"]["end"] < splits["test"]["start"]
    # Both models were trained, logged and registered; where to look is printed.
    train = summary["details"]["train"]
    assert set(train["candidates"]) == {"wide_deep", "dcn"}
    assert all(c["version"] and c["run_id"] for c in train["candidates"].values())
    assert "MLflow UI" in out
    # Everything generated stayed under the state dir.
    for sub in ("raw", "truth", "warehouse", "exports", "feast", "mlflow", "prefect"):
        assert (home / sub).exists(), sub


def test_main_job_prints_summaries_and_no_library_noise(online_state: dict) -> None:
    """Its output went to pipes, as ``make run > log 2>&1`` sends it to a file: one line for
    dbt, one per Feast stage, the training report once, no colour codes, no library
    warnings, no exit noise."""
    home, out = online_state["home"], online_state["stdout"] + online_state["stderr"]
    for noise in ("\x1b", "Warning:", "nanobind", "leaked", "Created sqlite table"):
        assert noise not in out, f"{noise!r} in:\n{out[-6000:]}"
    dbt_lines = [line for line in out.splitlines() if line.startswith("dbt build: ")]
    assert len(dbt_lines) == 1, out[-6000:]
    assert str(home / "dbt" / "logs" / "dbt.log") in dbt_lines[0]
    assert out.count("feast apply: project rankflow") == 1
    assert out.count("feast materialize up to") == 1
    assert out.count("LR baseline  test AUC") == 1  # the training report, printed once


def test_config_typo_is_an_error_naming_the_key(tmp_path: Path) -> None:
    result = _rankflow(tmp_path, "--set", "simulation.n_userz=5", "run")
    assert result.returncode == 2
    assert "simulation.n_userz" in result.stderr
    assert "unknown key" in result.stderr
    assert not (tmp_path / "warehouse").exists()


def test_bad_raw_file_fails_clearly_and_keeps_the_good_warehouse(
    online_state: dict, tmp_path: Path
) -> None:
    # A copy: the run stops at the contract check, before Feast reads the (copied) registry.
    home = Path(shutil.copytree(online_state["home"], tmp_path / "home"))
    live = [home / "warehouse" / "rankflow.duckdb", *sorted((home / "exports").glob("*.parquet"))]
    before = _digest(live)

    # A user's new day arrives without the `device` column.
    good_day = sorted((home / "raw" / "impressions").iterdir())[-1]
    table = pq.read_table(next(good_day.glob("*.parquet")))
    bad_day = home / "raw" / "impressions" / "event_date=2026-03-11"
    bad_day.mkdir()
    bad_file = bad_day / "part-0.parquet"
    pq.write_table(table.drop(["device"]).slice(0, 20), bad_file)
    try:
        result = _rankflow(home, *config_args(), "--set", "source=raw", "run")
    finally:
        bad_file.unlink()
        bad_day.rmdir()

    assert result.returncode == 1
    # Prefect logs the failed task with its traceback; the run then ends on one plain line
    # (possibly followed by Prefect stopping its temporary server) that names file and column.
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    error_at = result.stderr.index(error_lines[0])
    message = result.stderr[error_at:]
    assert "event_date=2026-03-11/part-0.parquet" in message
    assert "'device'" in message
    assert _digest(live) == before
