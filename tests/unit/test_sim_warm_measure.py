"""Warm start measured: a champion trained on an earlier window of the same
world, warm and cold starts trained on the next window, real training runs on small data."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml

from models.config import ModelConfig
from models.train import RunOptions, train_model
from rankflow.errors import RankflowError
from rankflow.features.training_set import TrainingSet
from rankflow.sim.warm_measure import (
    MIN_EVALS_PER_EPOCH,
    WarmMeasureError,
    WarmStartComparison,
    _measuring_config,
    challenger_as_warm_run,
    measure_warm_start,
    measure_warm_start_cached,
    measurement_key,
    measuring_overrides,
)
from tests.fixtures.synthetic import as_training_set, drift_windows, small_model_config

# Every test trains (a warm and a cold arm, several runs): left out of make test-fast.
pytestmark = pytest.mark.slow

KIND = "wide_deep"


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKFLOW_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def config() -> ModelConfig:
    # Evaluated once per epoch: coarser than the measurement needs, so it must refine it.
    return small_model_config({"training.max_epochs": 3, "training.patience": 1})


@pytest.fixture(scope="module")
def windows(config: ModelConfig, tmp_path_factory: pytest.TempPathFactory):
    """(champion checkpoint, the next window as a TrainingSet), same distribution (no drift)."""
    before, after = drift_windows(8000, 6000, seed=3)
    champion = train_model(
        KIND,
        before.train,
        before.valid,
        before.schema,
        config,
        RunOptions(checkpoint_dir=tmp_path_factory.mktemp("champion"), resume=False),
    )
    return champion.run_dir, as_training_set(after)


@pytest.fixture(scope="module")
def comparison(windows, config, tmp_path_factory) -> WarmStartComparison:
    champion, training_set = windows
    return measure_warm_start(
        KIND, training_set, config, champion, tmp_path_factory.mktemp("scratch"), seed=1
    )


def test_the_comparison_has_every_figure(comparison: WarmStartComparison) -> None:
    assert comparison.kind == KIND and comparison.seed == 1
    for arm in (comparison.warm, comparison.cold):
        assert 0.5 < arm.test_auc < 1
        assert 0 < arm.test_logloss < 1
        assert arm.first_eval_step <= arm.best_step <= arm.steps
        assert arm.best_valid_logloss <= arm.first_valid_logloss
    assert comparison.cold_steps_to_best == comparison.cold.best_step
    assert comparison.target_valid_logloss >= comparison.cold.best_valid_logloss
    metrics = comparison.to_metrics()
    assert all(k.startswith("warm_start_") and isinstance(v, float) for k, v in metrics.items())
    assert metrics["warm_start_warm_test_auc"] == comparison.warm.test_auc
    assert metrics["warm_start_cold_best_valid_logloss"] == comparison.cold.best_valid_logloss
    assert not any(math.isinf(v) or math.isnan(v) for v in metrics.values())
    lines = comparison.summary().splitlines()
    assert len(lines) == 2 and "test AUC warm" in lines[1]


def test_the_eval_cadence_is_refined_for_both_arms(comparison: WarmStartComparison) -> None:
    # small_model_config evaluates once per epoch; the measurement needs MIN_EVALS_PER_EPOCH.
    assert comparison.steps_per_epoch > MIN_EVALS_PER_EPOCH
    assert comparison.eval_every_steps == math.ceil(
        comparison.steps_per_epoch / MIN_EVALS_PER_EPOCH
    )
    assert comparison.warm.first_eval_step == comparison.eval_every_steps
    assert comparison.cold.first_eval_step == comparison.eval_every_steps


def test_a_champion_of_the_same_distribution_starts_ahead(
    comparison: WarmStartComparison,
) -> None:
    # The warm start's first evaluation is better than the cold start's first evaluation,
    # and it gets to the cold best sooner than the cold start did.
    assert comparison.warm.first_valid_logloss < comparison.cold.first_valid_logloss - 0.002
    assert comparison.warm_steps_to_cold_best is not None
    assert comparison.warm_steps_to_cold_best < comparison.cold_steps_to_best
    assert comparison.steps_ratio == pytest.approx(
        comparison.warm_steps_to_cold_best / comparison.cold_steps_to_best
    )
    metrics = comparison.to_metrics()
    assert metrics["warm_start_reached_cold_best"] == 1.0
    assert metrics["warm_start_steps_ratio"] == comparison.steps_ratio


def test_never_reaching_the_cold_best_is_reported_as_such(
    comparison: WarmStartComparison,
) -> None:
    never = WarmStartComparison(**{**comparison.__dict__, "warm_steps_to_cold_best": None})
    assert never.steps_ratio == math.inf and not never.goal_met
    metrics = never.to_metrics()
    assert metrics["warm_start_reached_cold_best"] == 0.0
    assert "warm_start_steps_ratio" not in metrics
    assert "never within" in never.summary()
    assert never.to_dict()["steps_ratio"] is None


def test_distillation_applies_to_the_warm_arm_only(windows, config, tmp_path: Path) -> None:
    champion, training_set = windows
    distilled = config.with_overrides({"warm_start.distill_weight": 0.3})
    plain = measure_warm_start(KIND, training_set, config, champion, tmp_path / "a", seed=1)
    result = measure_warm_start(KIND, training_set, distilled, champion, tmp_path / "b", seed=1)
    assert result.distill_weight == 0.3
    assert result.cold == plain.cold  # the cold arm trains without a teacher: the same run
    assert result.warm != plain.warm


def _challenger(windows, config: ModelConfig, folder: Path, overrides: dict) -> Path:
    """What the canary trains: warm-started from the champion, on the window, seed 1."""
    champion, training_set = windows
    run = train_model(
        KIND,
        training_set.train,
        training_set.valid,
        dict(training_set.feature_types),
        config.with_overrides(overrides),
        RunOptions(checkpoint_dir=folder, warm_start_from=champion, resume=False, seed=1),
    )
    return run.checkpoint_path


def test_the_challenger_s_own_run_is_the_warm_arm(
    windows, config, comparison: WarmStartComparison, tmp_path: Path
) -> None:
    champion, training_set = windows
    rows = len(training_set.train)
    overrides = measuring_overrides(config, rows)
    # The fixture's config evaluates once per epoch: the challenger needs the finer cadence.
    assert overrides["training.eval_every_steps"] == comparison.eval_every_steps
    checkpoint = _challenger(windows, config, tmp_path / "challenger", overrides)
    warm_run, why_not = challenger_as_warm_run(checkpoint, KIND, config, rows)
    assert warm_run is not None, why_not
    reused = measure_warm_start(
        KIND, training_set, config, champion, tmp_path / "s", seed=1, warm_run=warm_run
    )
    assert not (tmp_path / "s" / "warm").exists()  # only the cold arm was trained
    # Training is deterministic: the challenger is the run the measurement would have trained.
    assert reused.warm == comparison.warm and reused.cold == comparison.cold
    assert reused.warm_steps_to_cold_best == comparison.warm_steps_to_cold_best
    assert reused.warm_is_challenger and not comparison.warm_is_challenger
    assert reused.to_metrics()["warm_start_warm_is_challenger"] == 1.0
    assert reused.summary().startswith("the challenger (")
    assert WarmStartComparison.from_dict(reused.to_dict()) == reused


def test_a_challenger_trained_otherwise_is_not_the_warm_arm(
    windows, config, tmp_path: Path
) -> None:
    _, training_set = windows
    rows = len(training_set.train)
    coarse = _challenger(windows, config, tmp_path / "coarse", {"training.max_epochs": 1})
    warm_run, why_not = challenger_as_warm_run(coarse, KIND, config, rows)
    assert warm_run is None and "another config" in why_not
    measured = measuring_overrides(config, rows)
    fine = _challenger(windows, config, tmp_path / "fine", measured)
    assert challenger_as_warm_run(fine, "dcn", config, rows)[0] is None  # another family
    warm_run, why_not = challenger_as_warm_run(tmp_path / "nope", KIND, config, rows)
    assert warm_run is None and "does not load" in why_not
    # Already at the measuring cadence: nothing to override.
    assert measuring_overrides(config.with_overrides(measured), rows) == {}


def test_patience_in_evaluations_keeps_its_length_in_steps() -> None:
    config = small_model_config({"training.patience": 2})  # 2 evaluations of 1 epoch each
    refined = _measuring_config(config, train_rows=256 * 40)
    assert refined.training.eval_every_steps == 4 and refined.training.eval_every_epochs is None
    assert refined.training.patience_epochs == pytest.approx(2.0)
    fine = config.with_overrides({"training.eval_every_steps": 2})
    assert _measuring_config(fine, train_rows=256 * 40) is fine


def test_bad_input_is_a_one_line_rankflow_error(windows, config, tmp_path: Path) -> None:
    champion, training_set = windows
    with pytest.raises(WarmMeasureError, match="champion checkpoint") as error:
        measure_warm_start(KIND, training_set, config, tmp_path / "nope", tmp_path / "s")
    assert isinstance(error.value, RankflowError) and "\n" not in str(error.value)
    empty = TrainingSet(**{**training_set.__dict__, "valid": training_set.valid.iloc[:0]})
    with pytest.raises(WarmMeasureError, match="the valid split is empty"):
        measure_warm_start(KIND, empty, config, champion, tmp_path / "s")
    assert not (tmp_path / "s").exists()  # nothing trained


def test_drift_windows_share_a_world_and_drift_changes_only_the_truth() -> None:
    before, after = drift_windows(3000, 3000, seed=5)
    _, drifted = drift_windows(3000, 3000, seed=5, drift=0.5)
    price = {"before": before, "after": after}
    by_item = {k: s.train.groupby("item_id")["item_price"].first() for k, s in price.items()}
    common = by_item["before"].index.intersection(by_item["after"].index)
    assert len(common) > 50  # one catalogue...
    assert (by_item["before"][common] == by_item["after"][common]).all()
    assert after.train["event_timestamp"].min() > before.test["event_timestamp"].max()  # ...later
    # The same impressions, a different truth: drift moves the click probabilities.
    assert (after.train["item_id"].to_numpy() == drifted.train["item_id"].to_numpy()).all()
    moved = (after.truth - drifted.truth).abs()
    assert moved.mean() > 0.005


def test_the_bench_prints_and_writes_mean_and_se(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_warm_start.py"
    spec = importlib.util.spec_from_file_location("bench_warm_start", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(small_model_config({"training.max_epochs": 2}).to_dict()))
    out = tmp_path / "out.json"
    args = ["--seeds", "2", "--rows", "4000", "--kind", KIND, "--distill", "0,0.3"]
    assert bench.main([*args, "--config", str(config), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["distill_weight"] for r in results] == [0.0, 0.3]
    for result in results:
        assert len(result["seeds"]) == 2 and {s["seed"] for s in result["seeds"]} == {0, 1}
        mean, se = result["mean_se"]["test_auc_diff"]
        diffs = [s["test_auc_diff"] for s in result["seeds"]]
        assert mean == pytest.approx(sum(diffs) / 2) and se > 0
    printed = capsys.readouterr().out
    assert printed.count("seed 0:") == 2 and "mean +- SE over 2 seeds" in printed


def test_a_stored_measurement_round_trips(comparison: WarmStartComparison) -> None:
    again = WarmStartComparison.from_dict(json.loads(json.dumps(comparison.to_dict())))
    assert again == comparison
    assert again.to_metrics() == comparison.to_metrics()


def test_the_same_inputs_are_measured_once(
    windows, config, comparison: WarmStartComparison, tmp_path: Path
) -> None:
    champion, training_set = windows
    key = measurement_key("challenger-fingerprint", 1)
    args = (KIND, training_set, config, champion, tmp_path / "scratch")
    first, stored = measure_warm_start_cached(tmp_path / "cache", key, *args, seed=1)
    # deterministic: the measurement equals the module's own one with the same inputs
    assert not stored and first == comparison
    second, stored = measure_warm_start_cached(tmp_path / "cache", key, *args, seed=1)
    assert stored and second == first
    # another challenger, seed or code is another key; a damaged entry is measured again
    assert measurement_key("other", 1) != key != measurement_key("challenger-fingerprint", 2)
    (tmp_path / "cache" / f"{key}.json").write_text("{not json")
    third, stored = measure_warm_start_cached(tmp_path / "cache", key, *args, seed=1)
    assert not stored and third == first
