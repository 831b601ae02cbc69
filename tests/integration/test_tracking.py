"""MLflow tracking of the train step on real pipeline output (simulator -> dbt -> Feast).

One small pipeline run and one ``train_and_register`` per module; the tests read what they
left: the SQLite store and artifacts under the state dir, the runs' params / metrics /
artifacts / lineage tags, and the champion as a pyfunc loaded in a fresh process. The config
names a feature service other than the default (``ctr_ranker_v1``'s features under another
name), so every record of it shows the train step used the configured one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from mlflow import MlflowClient

from flows.build_features import build_features
from flows.params import ConfigParams
from flows.records import RunSummary
from models.scoring import Scorer
from rankflow.config import RankflowConfig, load_config
from rankflow.features.training_set import TrainingSet, build_training_set
from rankflow.paths import REPO_ROOT
from rankflow.settings import Settings
from rankflow.tracking.pyfunc import checkpoint_of, recorded_feature_service
from rankflow.training.candidate import logged_model_id
from rankflow.training.step import TrainOutcome, train_and_register
from tests.fixtures.synthetic import small_model_config

pytestmark = pytest.mark.integration

SMALL = {
    "simulation.n_users": 400,
    "simulation.n_items": 150,
    "simulation.n_impressions": 20000,
    "simulation.days": 10,
    "simulation.end_date": "2026-03-11",
    "simulation.seed": 5,
    "training_set.valid_days": 2,
    "training_set.test_days": 2,
    # Loose gates: two epochs on 12k rows. The gate logic is tested in test_registry.py.
    "registry.gates.max_ece": 0.1,
    "registry.gates.calibration_ratio": [0.5, 2.0],
    "registry.gates.min_auc_lift_over_baseline": None,
    "feature_service": "ctr_ranker_tracked",
}


def register_renamed_service(settings: Settings, source: str, name: str) -> None:
    """Apply a copy of the feature service ``source`` under ``name`` to the state's registry."""
    import copy

    from rankflow.features.store import open_store

    with open_store(settings) as store:
        renamed = copy.deepcopy(store.get_feature_service(source))
        renamed.name = name
        store.apply([renamed])


@dataclass
class Trained:
    home: Path
    config: RankflowConfig
    summary: RunSummary
    outcome: TrainOutcome
    client: MlflowClient
    training_set: TrainingSet


@pytest.fixture(scope="module")
def trained(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("tracking-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKFLOW_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        config = load_config(overrides=SMALL)
        settings = Settings(home=home)
        summary = build_features(config=ConfigParams(overrides=SMALL))
        register_renamed_service(settings, "ctr_ranker_v1", config.feature_service)
        # The train step builds its training set itself, through the configured service.
        outcome = train_and_register(
            config.train_step(),
            settings,
            model_config=small_model_config({"training.max_epochs": 2}),
        )
        training_set = build_training_set(
            settings, config.training_set, feature_service=config.feature_service
        )
        client = MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)
        yield Trained(home, config, summary, outcome, client, training_set)


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def test_runs_and_artifacts_live_in_the_state_dir(trained: Trained) -> None:
    outcome = trained.outcome
    assert outcome.tracking_uri == f"sqlite:///{trained.home.resolve()}/mlflow/mlflow.db"
    assert (trained.home / "mlflow" / "mlflow.db").is_file()
    experiment = trained.client.get_experiment(outcome.experiment_id)
    assert experiment.name == "rankflow-ctr"
    root = (trained.home / "mlflow" / "artifacts").resolve()
    assert _local(experiment.artifact_location) == root
    for candidate in outcome.candidates.values():
        run = trained.client.get_run(candidate.run_id)
        assert _local(run.info.artifact_uri).is_relative_to(root)
        assert run.info.status == "FINISHED"


def test_each_model_run_logs_config_metrics_artifacts_and_lineage(trained: Trained) -> None:
    outcome, client = trained.outcome, trained.client
    window = trained.training_set.describe()["window"]
    manifest = trained.home / "dbt" / "target" / "manifest.json"
    git = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    for kind, candidate in outcome.candidates.items():
        run = client.get_run(candidate.run_id)
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags

        # Flattened configs as params.
        assert params["kind"] == kind
        assert params["rankflow.simulation.seed"] == "5"
        assert params["rankflow.simulation.n_impressions"] == "20000"
        assert params["rankflow.registry.serving_model"] == "rankflow-ctr"
        assert params["rankflow.feature_service"] == "ctr_ranker_tracked"
        assert params["model.training.max_epochs"] == "2"
        assert params["model.features.categorical.user_id.encoding"] == "hash"

        # Per-epoch metrics, step = epoch.
        history = client.get_metric_history(candidate.run_id, "valid_logloss")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert len(history) == 2
        assert len(client.get_metric_history(candidate.run_id, "train_loss")) == 2

        # Final test metrics, the baseline's and the oracle's (simulated data), per segment.
        for key in ("auc", "logloss", "ne", "ece", "calibration_ratio", "baseline_auc"):
            assert np.isfinite(metrics[f"test_{key}"]), key
        assert metrics["test_oracle_auc"] > metrics["test_auc"] > 0.5
        assert metrics["test_auc"] == pytest.approx(candidate.metrics["auc"])
        assert "test_gap_closed_auc" in metrics
        segments = [k for k in metrics if k.startswith("test_auc_by_user_segment/")]
        assert len(segments) >= 3
        assert any(k.startswith("test_auc_by_device/") for k in metrics)
        # Diagnostics (issue #11): rows behind each segment AUC; small segments are warned of.
        values = [k.split("/", 1)[1] for k in segments if not k.endswith("/weighted_mean")]
        assert values and all(metrics[f"n_by_user_segment/{v}"] > 0 for v in values)
        assert int(tags["rankflow.warnings"]) == len(outcome.warnings) > 0
        assert any("[small_segment] user_segment=" in w for w in outcome.warnings)
        assert "data/config warning(s)" in outcome.render()

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
        assert tags["rankflow.feature_service"] == "ctr_ranker_tracked"
        version = client.get_model_version(candidate.registered_model, candidate.version)
        assert version.tags["rankflow.feature_service"] == "ctr_ranker_tracked"
        logged = client.get_logged_model(logged_model_id(version.source) or "")
        assert logged.tags["rankflow.feature_service"] == "ctr_ranker_tracked"
        assert tags["rankflow.feast_project"] == "rankflow"
        assert tags["rankflow.data_window"] == f"{window['start']}..{window['end']}"
        assert tags["rankflow.simulator_seed"] == "5"
        assert (
            tags["rankflow.dbt_manifest_sha256"]
            == hashlib.sha256(manifest.read_bytes()).hexdigest()
        )
        assert tags["rankflow.fingerprint"] == candidate.fingerprint
        if git.returncode == 0:
            assert tags["rankflow.git_sha"] == git.stdout.strip()


def test_the_baseline_has_its_own_run(trained: Trained) -> None:
    outcome = trained.outcome
    assert outcome.baseline_run_id is not None
    run = trained.client.get_run(outcome.baseline_run_id)
    assert run.data.tags["rankflow.model_kind"] == "lr_baseline"
    assert run.data.metrics["test_auc"] == pytest.approx(outcome.baseline_metrics["auc"])
    assert (_local(run.info.artifact_uri) / "plots" / "roc.png").is_file()


def test_the_champion_scores_raw_feature_rows(trained: Trained, tmp_path: Path) -> None:
    """Through ``mlflow.pyfunc``; test_registry.py loads a logged model in a fresh process
    that cannot import rankflow."""
    import mlflow

    outcome = trained.outcome
    champion = outcome.champion
    assert champion is not None
    checkpoint = outcome.candidates[champion["kind"]].checkpoint_path
    assert checkpoint is not None

    # Raw rows as the feature service and the request give them, with a new user's nulls.
    frame = trained.training_set.test.head(300).reset_index(drop=True)
    for column in ("user_impressions_7d", "user_ctr_7d", "user_days_since_last_click"):
        frame.loc[0, column] = np.nan
    frame.loc[1, "user_segment"] = None
    expected = Scorer.from_checkpoint(checkpoint).predict_proba(frame)

    mlflow.set_tracking_uri(outcome.tracking_uri)
    p = mlflow.pyfunc.load_model(f"models:/{outcome.serving_model}@champion").predict(frame)
    assert isinstance(p, np.ndarray)
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-9)
    assert all(0 < x < 1 for x in p)

    # The registered model's checkpoint is a warm-start / Scorer source as it is.
    downloaded = checkpoint_of(
        f"models:/{outcome.serving_model}@champion", tmp_path / "champion-download"
    )
    np.testing.assert_allclose(Scorer.from_checkpoint(downloaded).predict_proba(frame), expected)
    # ... and records the feature service it was trained on (what a scoring service checks).
    assert recorded_feature_service(tmp_path / "champion-download") == "ctr_ranker_tracked"

    # Logged with a signature, an input example and explicit, pinned requirements.
    uri = f"models:/{outcome.serving_model}@champion"
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    inputs = {spec.name: spec for spec in info.signature.inputs.inputs}
    assert inputs["user_id"].type.name == "long" and inputs["user_id"].required
    assert inputs["user_impressions_7d"].type.name == "double"
    assert not inputs["user_impressions_7d"].required
    assert info.saved_input_example_info is not None
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    assert any(line.startswith("torch==") for line in requirements)
    assert any(line.startswith("mlflow==") for line in requirements)
    assert all("==" in line for line in requirements if line and not line.startswith("#"))
