"""The registry through ``train_and_register``: first champion, gates, re-runs, a killed run,
and a logged model scoring in a fresh process that cannot import rankflow.

Real MLflow (SQLite store in a temporary state dir), real training on a small synthetic
training set (``tests.fixtures.synthetic``: the training-set contract's columns, no dbt or Feast),
so each call takes seconds.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from models.scoring import Scorer
from rankflow.config import RankflowConfig, parse_config
from rankflow.errors import ConfigError
from rankflow.features.training_set import DateWindow, TrainingSet
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.registry.aliases import aliases_of, apply_plan, read_serving_state
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import CHALLENGER, CHAMPION, PREVIOUS, canary_promotion
from rankflow.registry.versions import TAG_FINGERPRINT, versions
from rankflow.settings import Settings
from rankflow.training.fingerprints import code_fingerprint, data_fingerprint, model_fingerprint
from rankflow.training.outcome import TrainOutcome
from rankflow.training.step import train_and_register
from tests.fixtures.synthetic import make_splits, small_model_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_OVERRIDES = {"training.max_epochs": 2, "training.checkpoint_every_steps": 2}
FAMILIES = ("rankflow-wide-deep", "rankflow-dcn")
SERVING = "rankflow-ctr"
# Gates loose enough for two epochs on 4k synthetic rows (whose late days drift): these tests
# are about what the registry does with a verdict, not about model quality.
GATES = {
    "min_auc": 0.6,
    "max_ne": 1.0,
    "max_ece": 0.1,
    "calibration_ratio": [0.5, 2.0],
    "min_auc_lift_over_baseline": None,
}


def _window(*frames: Any) -> DateWindow:
    days = [d for f in frames for d in (f["event_timestamp"].min(), f["event_timestamp"].max())]
    return DateWindow(min(days).date(), max(days).date())


@pytest.fixture(scope="module")
def training_set() -> TrainingSet:
    splits = make_splits(6000, seed=3)
    return TrainingSet(
        train=splits.train.reset_index(drop=True),
        valid=splits.valid.reset_index(drop=True),
        test=splits.test.reset_index(drop=True),
        feature_service="ctr_ranker_v1",
        feature_names=list(splits.schema),
        feature_types=dict(splits.schema),
        window=_window(splits.train, splits.test),
        split_windows={
            "train": _window(splits.train),
            "valid": _window(splits.valid),
            "test": _window(splits.test),
        },
    )


@pytest.fixture
def paths(private_home: StatePaths) -> StatePaths:
    return private_home


def _config(**registry: Any) -> RankflowConfig:
    return parse_config({"registry": {"gates": GATES, **registry}})


def _train(
    config: RankflowConfig, paths: StatePaths, ts: TrainingSet, **overrides: Any
) -> TrainOutcome:
    return train_and_register(
        config.train_step(),
        Settings(home=paths.root),
        training_set=ts,
        model_config=small_model_config({**MODEL_OVERRIDES, **overrides}),
    )


def _client(outcome: TrainOutcome) -> MlflowClient:
    return MlflowClient(tracking_uri=outcome.tracking_uri, registry_uri=outcome.tracking_uri)


def _version_counts(client: MlflowClient) -> dict[str, int]:
    return {name: len(versions(client, name)) for name in (*FAMILIES, SERVING)}


def _run_count(client: MlflowClient, outcome: TrainOutcome) -> int:
    return len(client.search_runs([outcome.experiment_id], max_results=1000))


def test_first_run_names_a_champion_and_an_identical_rerun_adds_nothing(
    paths: StatePaths, training_set: TrainingSet
) -> None:
    config = _config()
    first = _train(config, paths, training_set)
    client = _client(first)

    assert set(first.candidates) == {"wide_deep", "dcn"}
    for kind, candidate in first.candidates.items():
        assert not candidate.reused
        assert candidate.gate.passed, (kind, candidate.gate.failures)
        mv = client.get_model_version(candidate.registered_model, candidate.version)
        assert mv.tags[TAG_FINGERPRINT] == candidate.fingerprint
        assert mv.tags["rankflow.model_kind"] == kind
        assert mv.tags["rankflow.gates"] == "passed"
        assert float(mv.tags["test_auc"]) == pytest.approx(candidate.metrics["auc"], abs=1e-4)
        assert "click-through-rate model" in mv.description
        assert f"AUC: {candidate.metrics['auc']:.4f}" in mv.description

    # The better gated candidate is the serving model's champion, and the version says why.
    best = max(first.candidates.values(), key=lambda c: c.metrics["auc"])
    assert first.promoted == CHAMPION
    assert set(first.aliases) == {CHAMPION}
    champion = client.get_model_version_by_alias(SERVING, CHAMPION)
    assert str(champion.version) == first.champion_version
    assert champion.tags[TAG_FINGERPRINT] == best.fingerprint
    assert champion.tags["rankflow.family_version"] == f"{best.registered_model}/{best.version}"
    reason = champion.tags["rankflow.alias.champion.reason"]
    assert reason.startswith("first champion") and "passed the quality gates" in reason
    assert "became @champion: first champion" in champion.description
    assert first.champion is not None and first.champion["kind"] == best.kind
    assert "@champion = v1" in first.render()

    counts, runs = _version_counts(client), _run_count(client, first)
    assert counts == {"rankflow-wide-deep": 1, "rankflow-dcn": 1, SERVING: 1}
    assert runs == 3  # wide_deep, dcn, lr_baseline

    again = _train(config, paths, training_set)
    assert all(c.reused for c in again.candidates.values())
    assert {k: c.version for k, c in again.candidates.items()} == {
        k: c.version for k, c in first.candidates.items()
    }
    assert again.promoted is None
    assert again.aliases == first.aliases
    assert _version_counts(client) == counts
    assert _run_count(client, again) == runs
    assert again.candidates["dcn"].metrics["auc"] == pytest.approx(
        first.candidates["dcn"].metrics["auc"]
    )


def test_a_failing_gate_moves_no_alias(paths: StatePaths, training_set: TrainingSet) -> None:
    strict = _config(gates={**GATES, "min_auc": 0.999})
    outcome = _train(strict, paths, training_set)
    client = _client(outcome)

    assert outcome.promoted is None
    assert outcome.aliases == {}
    assert outcome.decision.startswith("no champion: no candidate passed the quality gates")
    assert "min_auc" in outcome.decision
    for candidate in outcome.candidates.values():
        assert not candidate.gate.passed
        mv = client.get_model_version(candidate.registered_model, candidate.version)
        assert mv.tags["rankflow.gates"].startswith("failed: min_auc")
    assert versions(client, SERVING) == []

    # Gates are configuration: the same models (same fingerprints, nothing retrained) pass
    # looser gates on the next run, which then names the first champion.
    relaxed = _train(_config(), paths, training_set)
    assert all(c.reused for c in relaxed.candidates.values())
    assert relaxed.promoted == CHAMPION
    assert relaxed.champion_version == "1"


def test_a_training_set_of_another_feature_service_is_refused(
    paths: StatePaths, training_set: TrainingSet
) -> None:
    """The model would be served v2 features after training on v1's: refused before training."""
    config = parse_config({"registry": {"gates": GATES}, "feature_service": "ctr_ranker_v2"})
    with pytest.raises(ConfigError) as caught:
        _train(config, paths, training_set)
    assert str(caught.value) == (
        "feature_service: the training set was built through 'ctr_ranker_v1', but the config "
        "trains and serves 'ctr_ranker_v2'; build it through that one"
    )
    assert not paths.training.exists()  # nothing was trained


def test_training_waits_for_another_run_and_holds_the_lock_while_it_trains(
    paths: StatePaths, training_set: TrainingSet, caplog: pytest.LogCaptureFixture
) -> None:
    """train_and_register takes the training lock itself (no caller does; with the embedded
    store the state's): while another run holds it, this one trains nothing and says whom it
    waits for; once free, it trains each family holding the lock (a real flock, tried here)."""
    import threading

    from rankflow.errors import LockedError
    from rankflow.locks import training_lock

    held_while_training: dict[str, bool] = {}

    def hook(kind: str, step: int, loss: float) -> None:
        if kind in held_while_training:
            return
        try:
            with training_lock(paths):
                held_while_training[kind] = False
        except LockedError:
            held_while_training[kind] = True

    other_run = training_lock(paths)  # a concurrent training on this state
    other_run.acquire()
    done: dict[str, TrainOutcome] = {}

    def second_run() -> None:
        done["outcome"] = train_and_register(
            _config().train_step(),
            Settings(home=paths.root),
            training_set=training_set,
            model_config=small_model_config(MODEL_OVERRIDES),
            on_train_step=hook,
        )

    def waiting() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("training:")]

    caplog.set_level("INFO", logger="rankflow.training.step")
    thread = threading.Thread(target=second_run)
    try:
        thread.start()
        deadline = time.monotonic() + 600  # a bound on a hung run, not a timing assertion
        while not waiting():
            assert thread.is_alive(), "the run ended without waiting for the lock"
            assert time.monotonic() < deadline, "the run never reached the training lock"
            time.sleep(0.2)
        assert not paths.training.exists()  # it waits: nothing trained yet
    finally:
        other_run.release()
        thread.join(timeout=600)
    assert not thread.is_alive()
    outcome = done["outcome"]
    assert not any(c.reused for c in outcome.candidates.values())
    assert outcome.promoted == CHAMPION
    assert held_while_training == {"wide_deep": True, "dcn": True}
    (note,) = waiting()
    assert note.startswith(f"training: pid {os.getpid()} holds ")


def test_later_runs_register_but_never_move_the_champion(
    paths: StatePaths, training_set: TrainingSet
) -> None:
    first = _train(_config(), paths, training_set)
    client = _client(first)
    champion = first.champion_version

    # New inputs (another seed): new versions of both families, the champion stays.
    second = _train(_config(), paths, training_set, **{"training.seed": 7})
    assert not any(c.reused for c in second.candidates.values())
    assert {c.version for c in second.candidates.values()} == {"2"}
    assert second.promoted is None
    assert second.aliases == {CHAMPION: champion}
    assert "champion stays" in second.decision
    assert _version_counts(client) == {"rankflow-wide-deep": 2, "rankflow-dcn": 2, SERVING: 1}

    # Opt-in: the better gated candidate of a later run becomes the challenger, not champion.
    third = _train(
        _config(when_champion_exists="challenger"), paths, training_set, **{"training.seed": 7}
    )
    assert third.promoted == CHALLENGER
    assert third.aliases[CHAMPION] == champion
    assert PREVIOUS not in third.aliases
    challenger = client.get_model_version_by_alias(SERVING, CHALLENGER)
    best = max(third.candidates.values(), key=lambda c: c.metrics["auc"])
    assert challenger.tags[TAG_FINGERPRINT] == best.fingerprint
    assert challenger.tags["rankflow.alias.challenger.reason"].startswith("challenger:")

    # The canary's promotion, as it applies it: under the promotion lock, against the champion
    # it started with; the old champion becomes @previous, @challenger is removed, reasons
    # recorded.
    new = str(challenger.version)
    with promotion_lock(Settings.resolve(home=paths.root), SERVING):
        plan = canary_promotion(
            read_serving_state(client, SERVING), new, "won the canary", champion
        )
        applied = apply_plan(client, SERVING, plan)
    assert applied.versions == {PREVIOUS: champion, CHAMPION: new, CHALLENGER: None}
    assert aliases_of(client, SERVING) == {CHAMPION: new, PREVIOUS: champion}
    demoted = client.get_model_version(SERVING, champion)
    assert demoted.tags["rankflow.alias.previous.reason"] == (
        f"replaced as champion by v{challenger.version}"
    )
    assert f"left @champion for v{challenger.version}: won the canary" in demoted.description
    promoted = client.get_model_version(SERVING, str(challenger.version))
    assert promoted.tags["rankflow.alias.champion.reason"] == "won the canary"


_KILLED_RUN = """
import json, pickle, sys, time
from pathlib import Path

from tests.fixtures.synthetic import small_model_config
from rankflow.config import parse_config
from rankflow.settings import Settings
from rankflow.training.step import train_and_register

home, ts_file, marker, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
training_set = pickle.loads(Path(ts_file).read_bytes())

def hook(kind, step, loss):
    if kind == "dcn" and step == 5:
        marker.write_text(str(step))
        time.sleep(600)  # the test kills the process here, mid-training

train_and_register(
    parse_config({"registry": {"gates": json.loads(sys.argv[5])}}).train_step(),
    Settings(home=Path(home)),
    training_set=training_set,
    model_config=small_model_config(json.loads(overrides)),
    on_train_step=hook,
)
"""


def test_a_run_killed_during_training_leaves_aliases_and_the_next_run_completes(
    paths: StatePaths, training_set: TrainingSet, tmp_path: Path
) -> None:
    first = _train(_config(), paths, training_set)
    client = _client(first)
    before = dict(first.aliases)
    seed = {"training.seed": 11}

    script = tmp_path / "killed_run.py"
    script.write_text(_KILLED_RUN)
    ts_file = tmp_path / "training_set.pkl"
    ts_file.write_bytes(pickle.dumps(training_set))
    marker = tmp_path / "dcn-is-training"
    env = {**os.environ, "RANKFLOW_HOME": str(paths.root), "PYTHONPATH": str(REPO_ROOT)}
    log_file = (tmp_path / "killed_run.log").open("wb")
    overrides = json.dumps({**MODEL_OVERRIDES, **seed})
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(paths.root),
            str(ts_file),
            str(marker),
            overrides,
            json.dumps(GATES),
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 600  # a bound on a hung child, not a timing assertion
        while not marker.exists():
            assert process.poll() is None, (tmp_path / "killed_run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the child never reached DCN training"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log_file.close()

    # Aliases untouched; Wide & Deep (trained first) is registered, DCN is not.
    assert aliases_of(client, SERVING) == before
    assert _version_counts(client) == {"rankflow-wide-deep": 2, "rankflow-dcn": 1, SERVING: 1}
    dcn_runs = list((paths.training / "dcn").iterdir())
    assert len(dcn_runs) == 2
    assert any((d / "LAST_CHECKPOINT").is_file() for d in dcn_runs)

    # A run another killed process left RUNNING (killed while logging) is closed as FAILED.
    model_config = small_model_config({**MODEL_OVERRIDES, **seed})
    dcn_fingerprint = model_fingerprint(
        "dcn", data_fingerprint(training_set), code_fingerprint(), model_config
    )
    orphan = client.create_run(first.experiment_id, tags={TAG_FINGERPRINT: dcn_fingerprint})

    # The next run completes: W&D is found by fingerprint, DCN resumes from its checkpoint.
    after = _train(_config(), paths, training_set, **seed)
    assert after.candidates["wide_deep"].reused
    assert not after.candidates["dcn"].reused
    assert after.candidates["dcn"].resumed
    assert after.candidates["dcn"].version == "2"
    assert after.aliases == before
    assert _version_counts(client) == {"rankflow-wide-deep": 2, "rankflow-dcn": 2, SERVING: 1}
    assert after.candidates["dcn"].fingerprint == dcn_fingerprint
    # No run of a killed process is left RUNNING.
    running = client.search_runs([after.experiment_id], filter_string="status = 'RUNNING'")
    assert list(running) == []
    closed = client.get_run(orphan.info.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["rankflow.status"] == "interrupted"


def test_a_model_logged_but_not_registered_is_registered_from_its_run(
    paths: StatePaths, training_set: TrainingSet
) -> None:
    first = _train(_config(), paths, training_set)
    client = _client(first)
    dcn = first.candidates["dcn"]
    # As if the process had died between logging the model and registering it.
    client.delete_model_version(dcn.registered_model, dcn.version)
    runs = _run_count(client, first)

    again = _train(_config(), paths, training_set)
    assert again.candidates["dcn"].reused
    assert again.candidates["dcn"].run_id == dcn.run_id
    assert again.candidates["dcn"].version == "2"
    assert _run_count(client, again) == runs  # nothing trained or logged again
    assert again.aliases == first.aliases


EVAL_BATCH = 97  # not the default: the scorer must take it from the checkpoint's config
_SCORE = """
import importlib.abc, json, sys

class NoRankflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rankflow" or name.startswith(("rankflow.", "flows")):
            raise ImportError(f"scoring tried to import {name}")
        return None

sys.meta_path.insert(0, NoRankflow())

import mlflow
import pandas as pd

mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
p = model.predict(pd.read_parquet(sys.argv[3]))
import models
print(json.dumps({
    "p": [float(x) for x in p],
    "type": type(p).__name__,
    "models": models.__file__,
    "rankflow_loaded": any(m == "rankflow" or m.startswith("rankflow.") for m in sys.modules),
    "batch": model.unwrap_python_model().scorer.batch_size,
}))
"""


def test_a_logged_model_scores_in_a_fresh_process_without_rankflow(
    paths: StatePaths, training_set: TrainingSet, tmp_path: Path
) -> None:
    """Only the lock and the logged model: an isolated child (``-I``: no PYTHONPATH) in
    another folder, where ``import rankflow`` fails, loads the champion and scores rows."""
    import mlflow

    outcome = _train(_config(), paths, training_set, **{"training.eval_batch_size": EVAL_BATCH})
    assert outcome.champion is not None, outcome.decision
    champion = outcome.candidates[outcome.champion["kind"]]
    assert champion.checkpoint_path is not None
    frame = training_set.test.head(200).reset_index(drop=True)
    for column in ("user_impressions_7d", "user_ctr_7d", "user_days_since_last_click"):
        frame.loc[0, column] = np.nan  # a new user's missing stats
    frame.loc[1, "user_segment"] = None
    rows = tmp_path / "rows.parquet"
    frame.to_parquet(rows)
    expected = Scorer.from_checkpoint(champion.checkpoint_path).predict_proba(frame)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "score.py"
    script.write_text(_SCORE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", str(script), outcome.tracking_uri, outcome.champion_uri, str(rows)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["type"] == "ndarray"
    np.testing.assert_allclose(answer["p"], expected, rtol=1e-6, atol=1e-9)
    assert answer["rankflow_loaded"] is False
    # models came from the logged model's code, not from the checkout.
    artifacts = str((paths.mlflow / "artifacts").resolve())
    assert answer["models"].startswith(artifacts), answer["models"]
    assert answer["batch"] == EVAL_BATCH

    # What the model ships: the models package as code, the wrapper as its model code.
    mlflow.set_tracking_uri(outcome.tracking_uri)
    local = Path(
        mlflow.artifacts.download_artifacts(outcome.champion_uri, dst_path=str(tmp_path / "dl"))
    )
    assert sorted(p.name for p in (local / "code").iterdir()) == ["models"]
    (model_code,) = [p for p in local.rglob("*.py") if "code" not in p.relative_to(local).parts]
    source = model_code.read_text()
    assert "class RankflowCTRModel" in source and "set_model(RankflowCTRModel())" in source
    assert "import rankflow" not in source and "from rankflow" not in source
