"""prefect.yaml against a real Prefect server: deploy, trigger a run, let a worker run it.

The session's Prefect server (tests/fixtures/prefect_server.py), which runs no scheduler: the
cron schedules are checked as data, and no scheduled run can reach the worker. The deployments
are created from ``prefect.yaml`` with Prefect's own ``prefect --no-prompt deploy --all``, the
``features-daily`` deployment is run on tiny data through its parameters, and a process worker
started with ``--run-once`` from outside the checkout executes it. The worker is stopped in
teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from rankflow.features.exports import export_files
from rankflow.features.store import EXPORT_SCHEMAS
from rankflow.paths import REPO_ROOT, StatePaths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFECT = str(Path(sys.executable).with_name("prefect"))
SPEC = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
POOL = SPEC["definitions"]["work_pools"]["process"]["name"]
FEATURES = "build-features/features-daily"
TINY = {
    "simulation.n_users": 200,
    "simulation.n_items": 60,
    "simulation.n_impressions": 3000,
    "simulation.days": 6,
    "simulation.end_date": "2026-03-07",
}


@dataclass
class Server:
    api_url: str
    env: dict[str, str]
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "rankflow-home"

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api_url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api_url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and everything it started."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _run(
    args: Sequence[str], env: dict[str, str], *, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command in its own session; on timeout stop it and whatever it started."""
    process = subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(args)} did not finish in {timeout} s:\n{output[-4000:]}")
    finally:
        _stop(process)
    return subprocess.CompletedProcess(list(args), process.returncode, output, "")


@pytest.fixture(scope="module")
def server(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The session's Prefect server (tests/fixtures/prefect_server.py: no scheduler runs in
    it), and the environment of the ``prefect`` commands and the worker."""
    root = tmp_path_factory.mktemp("prefect-deployment")
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": prefect_api,
        "DO_NOT_TRACK": "1",
        "RANKFLOW_HOME": str(root / "rankflow-home"),
        # The worker imports the flows from the checkout (an installed rankflow would do too).
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    return Server(prefect_api, env, root)


@pytest.fixture(scope="module")
def deployed(server: Server) -> Server:
    created = _run(
        [PREFECT, "work-pool", "create", POOL, "--type", "process"], server.env, cwd=server.root
    )
    assert created.returncode == 0, created.stdout
    result = _run(
        [PREFECT, "--no-prompt", "deploy", "--all"], server.env, cwd=REPO_ROOT, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:]
    return server


def _deployments(server: Server) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in server.post("/deployments/filter", {})}


def test_deployments_match_prefect_yaml(deployed: Server) -> None:
    found = _deployments(deployed)
    expected = {d["name"]: d for d in SPEC["deployments"]}
    assert set(found) == set(expected)
    for name, spec in expected.items():
        deployment = found[name]
        assert deployment["entrypoint"] == spec["entrypoint"]
        assert deployment["work_pool_name"] == POOL
        assert deployment["enforce_parameter_schema"] is True
        assert deployment["parameters"] == spec["parameters"]
        crons = [
            (s["schedule"]["cron"], s["schedule"]["timezone"]) for s in deployment["schedules"]
        ]
        assert crons == [(s["cron"], s["timezone"]) for s in spec["schedules"]]
        assert deployment["global_concurrency_limit"]["limit"] == 1
        # nothing of the deploying machine was stored: no pull step, no path of this checkout
        assert deployment["pull_steps"] == []
        assert str(REPO_ROOT) not in json.dumps(deployment)


def test_enforced_schema_rejects_a_badly_typed_parameter(deployed: Server) -> None:
    result = _run(
        [PREFECT, "deployment", "run", FEATURES, "--param", 'full_refresh="sometimes"'],
        deployed.env,
        cwd=deployed.root,
    )
    assert result.returncode != 0
    assert "full_refresh" in result.stdout
    features = _deployments(deployed)["features-daily"]["id"]
    runs = deployed.post("/flow_runs/filter", {"deployments": {"id": {"any_": [features]}}})
    assert all(r["parameters"].get("full_refresh") != "sometimes" for r in runs)  # none created


def test_worker_runs_the_feature_build_deployment(deployed: Server, tmp_path: Path) -> None:
    params = json.dumps({"config": {"overrides": TINY}})
    triggered = _run(
        [PREFECT, "deployment", "run", FEATURES, "--params", params],
        deployed.env,
        cwd=deployed.root,
    )
    assert triggered.returncode == 0, triggered.stdout
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)

    # a worker started outside the checkout: the deployment must not rely on its cwd
    worker = _run(
        [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--run-once"],
        deployed.env,
        cwd=tmp_path,
        timeout=600,
    )
    assert worker.returncode == 0, worker.stdout[-4000:]

    flow_run = deployed.get(f"/flow_runs/{flow_run_id}")
    assert flow_run["state"]["type"] == "COMPLETED", (flow_run["state"], worker.stdout[-4000:])
    assert flow_run["parameters"]["config"]["overrides"] == TINY

    for name in EXPORT_SCHEMAS:
        files = export_files(StatePaths(deployed.state_dir), name)
        assert sum(pq.read_metadata(f).num_rows for f in files) > 0, name
    assert (deployed.state_dir / "feast" / "online_store.db").is_file()
    (summary_file,) = (deployed.state_dir / "runs").glob(
        f"*-build-features-{flow_run_id[:8]}/summary.json"
    )
    summary = json.loads(summary_file.read_text())
    assert summary["details"]["flow"]["deployment_id"] == flow_run["deployment_id"]
    assert summary["details"]["config"]["simulation.n_impressions"] == 3000
