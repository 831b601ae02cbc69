"""MLflow tracking of the train step on real pipeline output (simulator -> dbt -> Feast).

The session's built state is one small ``rankflow run`` (tests/fixtures/online_state.py); the
tests read what its train step left: the SQLite store and artifacts under the state dir, the
runs' params / metrics / artifacts / lineage tags, and the champion as a pyfunc. One more
train step, on a copy of that state, is configured with a feature service other than the
default (``ctr_ranker_v1``'s features under another name): every record of it names that one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from mlflow import MlflowClient

from models.scoring import Scorer
from rankflow.config import RankflowConfig, load_config
from rankflow.features.training_set import TrainingSet, build_training_set
from rankflow.settings import Settings
from rankflow.tracking.pyfunc import checkpoint_of, recorded_feature_service
from rankflow.training.candidate import logged_model_id
from tests.fixtures.online_state import MAX_EPOCHS
from tests.fixtures.online_state import overrides as online_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Trained:
    home: Path
    config: RankflowConfig
    train: dict[str, Any]  # the run summary's train step (TrainOutcome.to_dict)
    stdout: str
    client: MlflowClient
    training_set: TrainingSet
    git_sha: str | None


@pytest.fixture(scope="module")
def trained(online_state: dict[str, Any]) -> Trained:
    """What the session's ``rankflow run`` left (tests/fixtures/online_state.py), read only."""
    home = online_state["home"]
    (summary,) = (home / "runs").glob("*-pipeline-*/summary.json")
    train = json.loads(summary.read_text())["details"]["train"]
    config = load_config(None, online_overrides())
    training_set = build_training_set(
        Settings(home=home), config.training_set, feature_service=config.feature_service
    )
    uri = train["tracking_uri"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    stdout, git_sha = online_state["stdout"], online_state["git_sha"]
    return Trained(home, config, train, stdout, client, training_set, git_sha)


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def test_runs_and_artifacts_live_in_the_state_dir(trained: Trained) -> None:
    train = trained.train
    assert train["tracking_uri"] == f"sqlite:///{trained.home.resolve()}/mlflow/mlflow.db"
    assert (trained.home / "mlflow" / "mlflow.db").is_file()
    experiment = trained.client.get_experiment(train["experiment"]["id"])
    assert experiment.name == "rankflow-ctr"
    root = (trained.home / "mlflow" / "artifacts").resolve()
    assert _local(experiment.artifact_location) == root
    for candidate in train["candidates"].values():
        run = trained.client.get_run(candidate["run_id"])
        assert _local(run.info.artifact_uri).is_relative_to(root)
        assert run.info.status == "FINISHED"


def test_each_model_run_logs_config_metrics_artifacts_and_lineage(trained: Trained) -> None:
    train, client, simulation = trained.train, trained.client, trained.config.simulation
    window = trained.training_set.describe()["window"]
    manifest = trained.home / "dbt" / "target" / "manifest.json"
    for kind, candidate in train["candidates"].items():
        run = client.get_run(candidate["run_id"])
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags

        # Flattened configs as params.
        assert params["kind"] == kind
        assert params["rankflow.simulation.seed"] == str(simulation.seed)
        assert params["rankflow.simulation.n_impressions"] == str(simulation.n_impressions)
        assert params["rankflow.registry.serving_model"] == "rankflow-ctr"
        assert params["model.training.max_epochs"] == str(MAX_EPOCHS)
        assert params["model.features.categorical.item_id.encoding"] == "hash"

        # Training curves, evaluated several times an epoch (configs/model.yaml): step = the
        # optimizer step, up to the last one.
        history = client.get_metric_history(candidate["run_id"], "valid_logloss")
        steps = [m.step for m in history]
        train_rows, batch = (
            len(trained.training_set.train),
            int(params["model.training.batch_size"]),
        )
        assert steps == sorted(set(steps)) and len(steps) > MAX_EPOCHS
        assert steps[-1] == MAX_EPOCHS * math.ceil(train_rows / batch)
        train_loss = client.get_metric_history(candidate["run_id"], "train_loss")
        assert [m.step for m in train_loss] == steps

        # Final test metrics, the baseline's and the oracle's (simulated data), per segment.
        for key in ("auc", "logloss", "ne", "ece", "calibration_ratio", "baseline_auc"):
            assert np.isfinite(metrics[f"test_{key}"]), key
        assert metrics["test_oracle_auc"] > metrics["test_auc"] > 0.5
        assert metrics["test_auc"] == pytest.approx(candidate["metrics"]["auc"])
        assert "test_gap_closed_auc" in metrics
        segments = [k for k in metrics if k.startswith("test_auc_by_user_segment/")]
        assert len(segments) >= 3
        assert any(k.startswith("test_auc_by_device/") for k in metrics)
        # Diagnostics: rows behind each segment AUC; small segments are warned of.
        values = [k.split("/", 1)[1] for k in segments if not k.endswith("/weighted_mean")]
        assert values and all(metrics[f"n_by_user_segment/{v}"] > 0 for v in values)
        assert int(tags["rankflow.warnings"]) == len(train["warnings"]) > 0
        assert any("[small_segment] user_segment=" in w for w in train["warnings"])
        assert f"{len(train['warnings'])} data/config warning(s)" in trained.stdout

        # Artifacts.
        artifacts = _local(run.info.artifact_uri)
        for name in (
            "feature_spec.json",
            "config/rankflow.yaml",
            "config/model.yaml",
            "data/data_profile.json",
            "data/training_set.json",
            "metrics/test_metrics.json",
            "metrics/history.json",
            "data/warnings.json",
            "checkpoint/model.safetensors",
            "checkpoint/spec.json",
            "checkpoint/manifest.json",
        ):
            assert (artifacts / name).is_file(), name
        for plot in ("plots/roc.png", "plots/calibration.png"):
            assert (artifacts / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        profile = json.loads((artifacts / "data/data_profile.json").read_text())
        assert profile["training_set"]["splits"]["train"]["rows"] > 0
        assert 0 <= profile["columns"]["user_ctr_7d"]["null_share"]["train"] <= 1
        assert "casual" in json.dumps(profile["columns"]["user_segment"]["top"])

        # Lineage: the run, its registered version and its logged model name the service.
        assert tags["rankflow.feature_service"] == "ctr_ranker_v1"
        version = client.get_model_version(candidate["registered_model"], candidate["version"])
        assert version.tags["rankflow.feature_service"] == "ctr_ranker_v1"
        logged = client.get_logged_model(logged_model_id(version.source) or "")
        assert logged.tags["rankflow.feature_service"] == "ctr_ranker_v1"
        assert tags["rankflow.feast_project"] == "rankflow"
        assert tags["rankflow.data_window"] == f"{window['start']}..{window['end']}"
        assert tags["rankflow.simulator_seed"] == str(simulation.seed)
        assert (
            tags["rankflow.dbt_manifest_sha256"]
            == hashlib.sha256(manifest.read_bytes()).hexdigest()
        )
        assert tags["rankflow.fingerprint"] == candidate["fingerprint"]
        if trained.git_sha is not None:  # the commit the state was built at
            assert tags["rankflow.git_sha"] == trained.git_sha


def test_the_baseline_has_its_own_run(trained: Trained) -> None:
    baseline = trained.train["baseline"]
    assert baseline["run_id"] is not None
    run = trained.client.get_run(baseline["run_id"])
    assert run.data.tags["rankflow.model_kind"] == "lr_baseline"
    assert run.data.metrics["test_auc"] == pytest.approx(baseline["metrics"]["auc"])
    assert (_local(run.info.artifact_uri) / "plots" / "roc.png").is_file()


def test_the_champion_scores_raw_feature_rows(trained: Trained, tmp_path: Path) -> None:
    """Through ``mlflow.pyfunc``; test_registry.py loads a logged model in a fresh process
    that cannot import rankflow."""
    import mlflow

    train = trained.train
    champion = train["champion"]
    assert champion is not None
    checkpoint = Path(train["candidates"][champion["kind"]]["checkpoint_path"])

    # Raw rows as the feature service and the request give them, with a new user's nulls.
    frame = trained.training_set.test.head(300).reset_index(drop=True)
    for column in ("user_impressions_7d", "user_ctr_7d", "user_days_since_last_click"):
        frame.loc[0, column] = np.nan
    frame.loc[1, "user_segment"] = None
    expected = Scorer.from_checkpoint(checkpoint).predict_proba(frame)

    # Both: training in this process (another test's) sets the registry URI as well.
    mlflow.set_tracking_uri(train["tracking_uri"])
    mlflow.set_registry_uri(train["tracking_uri"])
    uri = f"models:/{train['serving_model']}@champion"
    p = mlflow.pyfunc.load_model(uri).predict(frame)
    assert isinstance(p, np.ndarray)
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-9)
    assert all(0 < x < 1 for x in p)

    # The registered model's checkpoint is a warm-start / Scorer source as it is.
    downloaded = checkpoint_of(uri, tmp_path / "champion-download")
    np.testing.assert_allclose(Scorer.from_checkpoint(downloaded).predict_proba(frame), expected)
    # ... and records the feature service it was trained on (what a scoring service checks).
    assert recorded_feature_service(tmp_path / "champion-download") == "ctr_ranker_v1"

    # Logged with a signature, an input example and explicit, pinned requirements.
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    inputs = {spec.name: spec for spec in info.signature.inputs.inputs}
    assert inputs["item_id"].type.name == "long" and inputs["item_id"].required
    assert inputs["user_impressions_7d"].type.name == "double"
    assert not inputs["user_impressions_7d"].required
    assert info.saved_input_example_info is not None
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    assert any(line.startswith("torch==") for line in requirements)
    assert any(line.startswith("mlflow==") for line in requirements)
    assert all("==" in line for line in requirements if line and not line.startswith("#"))


def register_renamed_service(settings: Settings, source: str, name: str) -> None:
    """Apply a copy of the feature service ``source`` under ``name`` to the state's registry."""
    import copy

    from rankflow.features.store import open_store

    with open_store(settings) as store:
        renamed = copy.deepcopy(store.get_feature_service(source))
        renamed.name = name
        store.apply([renamed])


def test_the_configured_feature_service_is_the_one_trained_on_and_recorded(
    online_copy: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train step builds its training set through ``feature_service`` and every record of
    the candidate (run, version, logged model, MLmodel metadata) names it."""
    from rankflow.training.step import train_and_register

    home = online_copy["home"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    settings = Settings(home=home)
    overrides = {**online_overrides(), "feature_service": "ctr_ranker_tracked"}
    config = load_config(None, overrides)
    register_renamed_service(settings, "ctr_ranker_v1", config.feature_service)
    outcome = train_and_register(
        config.train_step(),
        settings,
        model_overrides={"training.max_epochs": 1},
        families=("wide_deep",),
    )
    candidate = outcome.candidates["wide_deep"]
    client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
    run = client.get_run(candidate.run_id)
    assert run.data.tags["rankflow.feature_service"] == "ctr_ranker_tracked"
    assert run.data.params["rankflow.feature_service"] == "ctr_ranker_tracked"
    version = client.get_model_version(candidate.registered_model, candidate.version)
    assert version.tags["rankflow.feature_service"] == "ctr_ranker_tracked"
    logged = client.get_logged_model(logged_model_id(version.source) or "")
    assert logged.tags["rankflow.feature_service"] == "ctr_ranker_tracked"
    uri = f"models:/{candidate.registered_model}/{candidate.version}"
    checkpoint_of(uri, tmp_path / "download")
    assert recorded_feature_service(tmp_path / "download") == "ctr_ranker_tracked"
