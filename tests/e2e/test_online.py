"""The online half as a user runs it, after a small pipeline run (the session's built state):
``rankflow serve`` in its own process, ``rankflow replay --http`` in both modes against it,
then ``rankflow gap-check`` and the ``gap-check`` flow, whose report lands in MLflow next to
the champion's run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from rankflow.paths import REPO_ROOT
from rankflow.tracking.server import free_port
from tests.fixtures.service import scoring_service
from tests.fixtures.state_copy import copy_state

pytestmark = pytest.mark.e2e

# The 10-day test data's 28-day counts grow through the training window: real drift, which
# the check reports; a day of ~1200 impressions is too little to judge the metric gap tightly.
LOOSE = [
    "--set",
    "monitoring.psi={warn: 20, fail: 50}",
    "--set",
    "monitoring.ks={warn: 0.95, fail: 0.99}",
    "--set",
    "monitoring.adversarial_auc_lift={warn: 0.6, fail: 0.7}",
    "--set",
    "monitoring.auc_drop={warn: 0.3, fail: 0.5}",
    "--set",
    "monitoring.logloss_rise={warn: 0.3, fail: 0.5}",
    "--set",
    "monitoring.calibration_error={warn: 2, fail: 5}",
    "--set",
    "monitoring.min_labelled_rows=200",
    "--set",
    "monitoring.drift_rows=1500",
]


def _env(home: Path, url: str) -> dict[str, str]:
    env = {**os.environ, "RANKFLOW_HOME": str(home), "RANKFLOW_SERVICE_URL": url}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _rankflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankflow", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def session(online_state: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("online-e2e") / "home"
    copy_state(online_state["home"], home)
    url = f"http://127.0.0.1:{free_port()}"
    env = _env(home, url)
    with scoring_service(env, home.parent / "serve.log", "--set", "serving.log.flush_seconds=0.5"):
        replays = {
            mode: _rankflow(env, "replay", "--http", "--mode", mode, "--impressions", "1200")
            for mode in ("log", "closed")
        }
        metrics = httpx.get(f"{url}/metrics").text
    return {**online_state, "home": home, "env": env, "replays": replays, "metrics": metrics}


def test_replay_sends_a_day_in_both_modes(session: dict) -> None:
    log, closed = session["replays"]["log"], session["replays"]["closed"]
    assert log.returncode == 0, log.stderr[-3000:]
    assert closed.returncode == 0, closed.stderr[-3000:]
    assert "replay (log) of 2026-03-11" in log.stdout
    assert "replay (closed) of 2026-03-11" in closed.stdout
    assert "expected CTR" in closed.stdout and "oracle order" in closed.stdout
    assert 'rankflow_log_rows_total{outcome="dropped"} 0.0' in session["metrics"]
    labels = list((session["home"] / "logs" / "ctr_ranker_v1" / "labels").glob("*.parquet"))
    assert len(labels) == 2


def test_gap_check_prints_the_verdict_and_logs_the_report_next_to_the_champion(
    session: dict,
) -> None:
    result = _rankflow(session["env"], *LOOSE, "gap-check")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("gap check: ")
    for check in ("feature_skew", "score_skew", "drift", "metric_gap", "freshness"):
        assert check in out
    assert "PASS feature_skew" in out and "PASS score_skew" in out
    run_id = out.split("MLflow run  ")[1].split()[0]
    uri = f"sqlite:///{session['home'] / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(run_id)
    champion = client.get_model_version_by_alias(session["model"], "champion")
    assert run.data.tags["rankflow.model_version"] == str(champion.version)
    assert run.info.experiment_id == client.get_run(champion.run_id).info.experiment_id
    assert run.data.tags["rankflow.gap_check.verdict"] in ("pass", "warn")
    artifacts = {a.path for a in client.list_artifacts(run_id, "gap_check")}
    assert {"gap_check/report.md", "gap_check/summary.json"} <= artifacts
    summary = json.loads(
        Path(client.download_artifacts(run_id, "gap_check/summary.json")).read_text()
    )
    assert summary["context"]["labelled_rows"] >= 200
    assert summary["checks"]["metric_gap"]["details"]["arms"]


def test_the_gap_check_flow_returns_the_verdict(session: dict) -> None:
    env = {**session["env"], "PREFECT_HOME": str(session["home"] / "prefect")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankflow",
            *LOOSE,
            "--set",
            "monitoring.max_rows=2000",
            "gap-check",
            "--flow",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    verdict_line = result.stdout.strip().splitlines()[-1]
    assert verdict_line.split()[0] in ("PASS", "WARN")
    assert json.loads(verdict_line.split(" ", 1)[1])["feature_skew"] == "pass"
