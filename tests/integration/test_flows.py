"""The Prefect flows as plain Python, on Prefect's test harness, over tiny simulated data.

One temporary Prefect server for the session (``prefect_test_harness``); each test has its own
``RANKFLOW_HOME``. The flows run the real library: simulator, contract check, dbt, Feast and,
in the pipeline test, training and the MLflow registry.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect.client.schemas.sorting import TaskRunSort
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL
from prefect.states import State

from flows.build_features import build_features
from flows.params import ConfigParams
from flows.pipeline import pipeline
from flows.policies import (
    is_transient,
    outputs_intact,
    record_outputs,
    simulate_key,
)
from flows.train import train
from rankflow.config import ConfigError, load_config
from rankflow.data.contract import ContractError
from rankflow.data.raw_files import fingerprint, list_raw
from rankflow.features import store as feature_store
from rankflow.features.exports import export_files
from rankflow.features.store import EXPORT_SCHEMAS, FeatureStoreError
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.sim.simulate import SimulationConfig, simulate
from rankflow.warehouse.build import WarehouseBuildError

pytestmark = pytest.mark.integration

TINY: dict[str, Any] = {
    "simulation.n_users": 200,
    "simulation.n_items": 60,
    "simulation.n_impressions": 3000,
    "simulation.days": 6,
    "simulation.end_date": "2026-03-07",
    "training_set.valid_days": 1,
    "training_set.test_days": 1,
}
BUILD_TASKS = {"simulate", "contract-check", "dbt-build", "feast-apply", "feast-materialize"}


@dataclass
class Built:
    home: Path
    state: State


@pytest.fixture(scope="module")
def built(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One build-features run on tiny data; tests may run more flows in the same state dir."""
    home = tmp_path_factory.mktemp("flows-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKFLOW_HOME", str(home))
        state = build_features(config=ConfigParams(overrides=TINY), return_state=True)
    return Built(home, state)


def task_runs(state: State) -> dict[str, list[TaskRun]]:
    """The task runs of a flow run, by task name (``simulate-1a2`` -> ``simulate``)."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
            offset=0,
        )
    grouped: dict[str, list[TaskRun]] = {}
    for run in runs:
        grouped.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return grouped


def artifacts(flow_run_id: UUID) -> dict[str, str]:
    """The artifacts of a flow run by key, read over the REST API the UI uses."""
    response = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}},
    )
    response.raise_for_status()
    return {a["key"]: str(a["data"]) for a in response.json() if a["key"]}


# --------------------------------------------------------------------------------------------
# build-features


@pytest.mark.slow  # the module's built state
def test_build_features_completes_and_writes_exports(built: Built) -> None:
    assert built.state.is_completed(), built.state.message
    summary = built.state.result()
    paths = StatePaths(built.home)

    for name in EXPORT_SCHEMAS:
        files = export_files(paths, name)
        assert files, name
        assert sum(pq.read_metadata(f).num_rows for f in files) > 0, name
    assert (paths.feast / "online_store.db").is_file()
    views = summary.details["feature_store"]["materialize"]["views"]
    assert views and all(v["mode"] == "initial" for v in views.values())

    runs = task_runs(built.state)
    assert set(runs) == BUILD_TASKS
    assert all(r.state.is_completed() and r.run_count == 1 for rs in runs.values() for r in rs)

    # the config is recorded with the run: summary.json and an artifact on the flow run
    assert summary.summary_path.is_file() and summary.summary_path.parent.parent == paths.runs
    assert summary.details["flow"]["overrides"] == TINY
    assert summary.details["config"]["simulation.n_impressions"] == 3000
    recorded = artifacts(built.state.state_details.flow_run_id)
    assert "n_impressions: 3000" in recorded["build-features-config"]
    assert "build-features-summary" in recorded


@pytest.mark.slow  # the module's built state
def test_rerun_is_served_from_cache_and_retries_a_transient_failure(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKFLOW_HOME", str(built.home))
    calls: list[int] = []
    real = feature_store.materialize_incremental

    def locked_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_store, "materialize_incremental", locked_once)
    state = build_features(config=ConfigParams(overrides=TINY), return_state=True)

    assert state.is_completed(), state.message
    runs = task_runs(state)
    # same config, raw files untouched: no new simulation, no new contract check
    for name in ("simulate", "contract-check"):
        (run,) = runs[name]
        assert run.state.name == "Cached", (name, run.state)
    # the build itself runs (dbt is incremental by itself)
    assert runs["dbt-build"][0].state.name == "Completed"
    # a locked online store is transient: retried once, then completed
    (materialize,) = runs["feast-materialize"]
    assert materialize.state.is_completed()
    assert materialize.run_count == 2
    assert len(calls) == 2


def test_simulation_cache_is_refreshed_when_its_files_change(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    config = load_config(None, {**TINY, "simulation.days": 2})
    simulate(config.simulation, paths.raw, paths.truth)
    key = simulate_key(config, paths)
    assert not outputs_intact(paths, "simulate", key, paths.raw, paths.truth)  # nothing recorded
    record_outputs(paths, "simulate", key, paths.raw, paths.truth)
    assert outputs_intact(paths, "simulate", key, paths.raw, paths.truth)

    other = load_config(None, {**TINY, "simulation.days": 2, "simulation.seed": 8})
    assert not outputs_intact(paths, "simulate", simulate_key(other, paths), paths.raw, paths.truth)
    users = paths.raw / "users" / "users.parquet"
    pq.write_table(pq.read_table(users).slice(0, 10), users)  # someone rewrote a raw file
    assert not outputs_intact(paths, "simulate", key, paths.raw, paths.truth)


# --------------------------------------------------------------------------------------------
# Parameters and failures


@pytest.mark.parametrize(
    ("flow", "parameters", "named"),
    [
        (
            build_features,
            {"config": {"overrides": {"simulation.n_userz": 5}}},
            "simulation.n_userz",
        ),
        (build_features, {"config": {"overrides": {"simulation.n_users": -1}}}, "n_users"),
        (build_features, {"config": {"config_path": "configs/nope.yaml"}}, "not found"),
        (build_features, {"config": {"overridez": {}}}, "overridez"),
        (build_features, {"full_refresh": "sometimes"}, "full_refresh"),
        (train, {"config": {"overrides": {"registry.select_by": "accuracy"}}}, "select_by"),
        (pipeline, {"config": {"overrides": {"training_set.test_days": 0}}}, "test_days"),
    ],
    ids=[
        "unknown-key",
        "bad-value",
        "missing-file",
        "unknown-field",
        "bad-type",
        "train",
        "pipeline",
    ],
)
def test_a_bad_parameter_fails_before_any_work(
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flow: Any,
    parameters: dict[str, Any],
    named: str,
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("RANKFLOW_HOME", str(home))

    state = flow(**parameters, return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ParameterTypeError), repr(error)
    assert named in str(error)
    assert task_runs(state) == {}  # not a single task started
    assert not home.exists() or not any(home.iterdir())  # and nothing was written


def test_a_contract_error_is_not_retried(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, truth = tmp_path / "raw", tmp_path / "truth"
    simulate(SimulationConfig(n_users=50, n_items=20, n_impressions=300, days=2), raw, truth)
    users = raw / "users" / "users.parquet"
    pq.write_table(pq.read_table(users).drop_columns(["segment"]), users)
    monkeypatch.setenv("RANKFLOW_HOME", str(tmp_path / "home"))

    state = build_features(
        config=ConfigParams(overrides={"source": "raw", "raw_dir": str(raw)}), return_state=True
    )

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ContractError) and "segment" in str(error)
    runs = task_runs(state)
    assert set(runs) == {"contract-check"}  # stopped there: no dbt, no Feast
    (check,) = runs["contract-check"]
    assert check.state.is_failed()
    assert check.run_count == 1  # the task allows retries, but not of a contract error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: feature_view"), False),
        (ContractError(Path("raw"), []), False),
        (WarehouseBuildError("dbt test not_null_stg_users_user_id failed"), False),
        (ConfigError("configs/rankflow.yaml: unknown key"), False),
        (FileNotFoundError("exports/user_attributes.parquet"), False),
        (ValueError("no champion"), False),
    ],
)
def test_only_transient_failures_are_retried(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_transient_cause_counts_unless_the_library_reported_it() -> None:
    class TrackingError(RuntimeError):
        pass

    try:
        try:
            raise ConnectionRefusedError("mlflow server down")
        except ConnectionRefusedError as cause:
            raise TrackingError("MLflow tracking at http://mlflow:5000") from cause
    except TrackingError as wrapped:
        assert is_transient(wrapped)
    try:
        try:
            raise ConnectionRefusedError("redis down")
        except ConnectionRefusedError as cause:
            raise FeatureStoreError("invalid Feast configuration") from cause
    except FeatureStoreError as reported:
        assert not is_transient(reported)


# --------------------------------------------------------------------------------------------
# pipeline = build-features + train


@pytest.mark.slow  # the module's built state, then training
def test_pipeline_runs_build_features_then_train(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKFLOW_HOME", str(built.home))

    state = pipeline(config=ConfigParams(overrides=TINY), return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert set(summary.stage_seconds) == {
        "simulate",
        "validate",
        "warehouse",
        "feature_store",
        "training_set",
        "train",
    }
    splits = summary.details["training_set"]["splits"]
    raw = StatePaths(built.home).raw / "impressions"
    raw_rows = pq.ParquetDataset(raw).read(columns=["event_id"]).num_rows
    assert sum(s["rows"] for s in splits.values()) == raw_rows  # every impression, none lost
    train_outcome = summary.details["train"]
    assert set(train_outcome["candidates"]) == {"wide_deep", "dcn"}
    assert all(c["version"] for c in train_outcome["candidates"].values())
    for sub in summary.details["subflow_summaries"].values():
        assert Path(sub).is_file()
    text = summary.render()
    assert "MLflow UI:" in text and "champion:" in text


# --------------------------------------------------------------------------------------------
# The contract check's deep read: only what is new or changed


def _raw_fingerprints(raw: Path) -> dict[str, str]:
    listing = list_raw(raw)
    return {listing.label(p): fingerprint(p) for files in listing.files.values() for p in files}


@pytest.mark.slow  # the module's built state
def test_a_daily_run_decodes_only_new_or_changed_raw_files(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKFLOW_HOME", str(built.home))
    paths = StatePaths(built.home)
    before = _raw_fingerprints(paths.raw)

    # the next day: the simulator appends a day (and drops the oldest; shared days identical)
    next_day = {**TINY, "simulation.end_date": "2026-03-08"}
    state = build_features(config=ConfigParams(overrides=next_day), return_state=True)

    assert state.is_completed(), state.message
    details = state.result().details
    after = _raw_fingerprints(paths.raw)
    changed = {label for label, digest in after.items() if before.get(label) != digest}
    unchanged = set(after) - changed
    assert any("impressions/" in label for label in changed)
    assert sum("impressions/" in label for label in unchanged) >= 4
    # the contract-check task reads footers and schemas only; the build decodes exactly the
    # files that are new or rewritten since the last build, never the unchanged history
    assert details["validate"]["decoded"] == []
    assert set(details["warehouse"]["decoded"]) == changed

    # a rewritten file with corrupt pages in a column the footer-level check need not read
    # (valid footer): the flow's check passes it, the build's deep read of changed files fails
    # it, named, before dbt runs
    victim = sorted((paths.raw / "impressions").glob("event_date=*/*.parquet"))[-1]
    pq.write_table(pq.read_table(victim), victim, write_page_checksum=True)
    meta = pq.read_metadata(victim).row_group(0)
    device = next(
        meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "device"
    )
    data = bytearray(victim.read_bytes())
    first = device.dictionary_page_offset if device.has_dictionary_page else device.data_page_offset
    end = first + device.total_compressed_size  # the column chunk; other columns stay intact
    for k in range(device.data_page_offset + 24, end - 2, 5):  # inside the data page, mostly
        data[k] ^= 0xFF
    victim.write_bytes(bytes(data))
    pq.read_metadata(victim)  # the footer reads: only a page-by-page read finds the damage
    exports_before = sorted(p.stat().st_mtime_ns for p in paths.exports.rglob("*.parquet"))

    raw_only = {**next_day, "source": "raw"}
    state = build_features(config=ConfigParams(overrides=raw_only), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ContractError), repr(error)
    assert f"{victim.parent.name}/{victim.name}: is not a readable" in str(error)
    runs = task_runs(state)
    assert runs["contract-check"][0].state.is_completed()  # footers fine: passes the flow's check
    assert runs["dbt-build"][0].state.is_failed()  # the build's deep read of the changed file
    assert sorted(p.stat().st_mtime_ns for p in paths.exports.rglob("*.parquet")) == exports_before


# --------------------------------------------------------------------------------------------
# Two training runs at once: the training lock


class _Output:
    """A child process's stdout and stderr, read as they come (one thread each)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process, self.lines = process, []
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (process.stdout, process.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float) -> str:
        self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=60)
        return self.text()


@pytest.mark.slow  # the module's built state
def test_two_train_runs_started_together_never_race(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real ``rankflow train`` processes on one state dir and one MLflow store, both
    queued on the training lock (this test holds it until both say so, naming the holder):
    released, one trains and the other then reuses what it registered; both exit 0 without a
    traceback, and no fingerprint is logged or registered twice (before the lock, one died on a
    CheckpointError and the baseline was logged twice)."""
    from mlflow import MlflowClient

    from rankflow.locks import training_lock
    from rankflow.registry.versions import TAG_FINGERPRINT
    from rankflow.tracking.setup import default_tracking_uri

    model = yaml.safe_load((REPO_ROOT / "configs" / "model.yaml").read_text())
    model["training"]["max_epochs"] = 1  # a fingerprint no earlier test trained, and quick
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump(model))
    overrides = {**TINY, "model_config_path": str(model_file)}
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    uri = default_tracking_uri(StatePaths(built.home))
    env = {
        **os.environ,
        "RANKFLOW_HOME": str(built.home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's server, not two new ones
        # this state's own store: an earlier in-process mlflow.set_tracking_uri exported another
        "MLFLOW_TRACKING_URI": uri,
    }
    command = [sys.executable, "-m", "rankflow", *sets, "train"]
    with training_lock(StatePaths(built.home)):
        runs = [
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [_Output(run) for run in runs]
        deadline = time.monotonic() + 600  # a bound for a hung run, not a timing
        while not all("waiting up to" in output.text() for output in outputs):
            exited = [o.text()[-3000:] for o in outputs if o.process.poll() is not None]
            assert not exited, exited
            assert time.monotonic() < deadline, [output.text()[-3000:] for output in outputs]
            time.sleep(0.5)
    texts = [output.finish(timeout=900) for output in outputs]

    assert [run.returncode for run in runs] == [0, 0], [text[-3000:] for text in texts]
    for text in texts:
        assert "Traceback" not in text, text[-3000:]
        assert "CheckpointError" not in text
        # the note says whom it waited for (the note itself: tests/unit/test_locks.py)
        assert f"training: pid {os.getpid()} holds" in text, text[-3000:]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    fingerprints = [
        run.data.tags[TAG_FINGERPRINT]
        for run in client.search_runs(experiments, "attributes.status = 'FINISHED'")
        if TAG_FINGERPRINT in run.data.tags
    ]
    assert fingerprints and len(fingerprints) == len(set(fingerprints))
    for registered in client.search_registered_models():
        tagged = [
            v.tags.get(TAG_FINGERPRINT)
            for v in client.search_model_versions(f"name = '{registered.name}'")
            if v.tags.get(TAG_FINGERPRINT)
        ]
        assert len(tagged) == len(set(tagged)), registered.name
