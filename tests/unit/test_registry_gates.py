"""Quality gates, candidate choice, the registry / tracking config sections, tracking URIs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rankflow.config import ConfigError, QualityGates, TrackingConfig, parse_config
from rankflow.paths import StatePaths
from rankflow.registry.gates import Candidate, GateResult, check_gates, comparison, pick_best
from rankflow.settings import Settings
from rankflow.tracking.setup import default_tracking_uri, resolve_tracking_uri

GOOD = {
    "auc": 0.72,
    "ne": 0.93,
    "ece": 0.004,
    "calibration_ratio": 1.02,
    "baseline_auc": 0.69,
}


def candidate(kind: str, gate: GateResult, **metrics: float) -> Candidate:
    return Candidate(
        kind=kind,
        name=f"rankflow-{kind}",
        version="1",
        run_id=None,
        source="models:/m-1",
        model_id=None,
        fingerprint=kind,
        metrics=dict(metrics),
        gate=gate,
    )


PASSED = GateResult(checks={"min_auc": "pass"}, failures=())
FAILED = GateResult(checks={"min_auc": "FAIL"}, failures=("min_auc: AUC 0.5 < 0.6",))


def test_default_gates_pass_a_sound_model() -> None:
    result = check_gates(GOOD, QualityGates())
    assert result.passed, result.failures
    assert set(result.checks) == {
        "min_auc",
        "max_ne",
        "max_ece",
        "calibration_ratio",
        "min_auc_lift_over_baseline",
    }
    assert result.summary().startswith("passed all quality gates")


@pytest.mark.parametrize(
    ("change", "gate"),
    [
        ({"auc": 0.55, "baseline_auc": 0.5}, "min_auc"),
        ({"ne": 1.01}, "max_ne"),
        ({"ece": 0.05}, "max_ece"),
        ({"calibration_ratio": 1.4}, "calibration_ratio"),
        ({"calibration_ratio": 0.7}, "calibration_ratio"),
        ({"baseline_auc": 0.73}, "min_auc_lift_over_baseline"),
    ],
)
def test_each_gate_fails_on_its_own_metric(change: dict[str, float], gate: str) -> None:
    result = check_gates({**GOOD, **change}, QualityGates())
    assert not result.passed
    assert [failure.split(":")[0] for failure in result.failures] == [gate]
    assert result.checks[gate].startswith("FAIL")


@pytest.mark.parametrize(
    ("change", "gate", "text"),
    [
        ({"auc": 0.5396}, "min_auc", "AUC 0.5396 < 0.6"),
        ({"ne": 1.01}, "max_ne", "NE 1.0100 > 0.99"),
        ({"ece": 0.05}, "max_ece", "ECE 0.0500 > 0.02"),
        ({"calibration_ratio": 1.4}, "calibration_ratio", "calibration ratio 1.4000 outside"),
        ({"baseline_auc": 0.73}, "min_auc_lift_over_baseline", "= -0.0100 < 0.0"),
        ({"auc": math.nan}, "min_auc", "AUC n/a (not measured)"),
    ],
)
def test_a_failed_gate_reads_as_what_failed(change: dict[str, float], gate: str, text: str) -> None:
    """``AUC 0.5396 < 0.6``, not the rule it broke (``AUC 0.5396 >= 0.6`` read as a claim)."""
    result = check_gates({**GOOD, **change}, QualityGates())
    assert result.checks[gate] == f"FAIL: {result.failures[0].split(': ', 1)[1]}"
    assert text in result.checks[gate]
    assert text in result.summary()
    assert check_gates(GOOD, QualityGates()).checks["min_auc"].startswith("pass: AUC 0.7200 >= 0.6")


def test_missing_or_nan_metric_fails_its_gate_and_null_gates_are_skipped() -> None:
    result = check_gates({**GOOD, "auc": math.nan, "ece": None}, QualityGates())  # type: ignore[dict-item]
    failed = {failure.split(":")[0] for failure in result.failures}
    assert failed == {"min_auc", "max_ece", "min_auc_lift_over_baseline"}
    open_gates = QualityGates(
        min_auc=None,
        max_ne=None,
        max_ece=None,
        calibration_ratio=None,
        min_auc_lift_over_baseline=None,
    )
    assert check_gates({}, open_gates).passed


def test_pick_best_ignores_failed_candidates_and_respects_direction() -> None:
    a = candidate("wide_deep", PASSED, auc=0.70, logloss=0.20)
    b = candidate("dcn", PASSED, auc=0.72, logloss=0.21)
    c = candidate("other", FAILED, auc=0.90, logloss=0.10)
    assert pick_best([a, b, c], "auc") is b
    assert pick_best([a, b, c], "logloss") is a
    assert pick_best([c], "auc") is None
    assert pick_best([], "auc") is None
    # A NaN metric never wins; a tie goes to the earlier kind name, whatever the order.
    nan = candidate("aaa", PASSED, auc=math.nan)
    assert pick_best([nan, a], "auc") is a
    tie = candidate("dcn", PASSED, auc=0.70)
    assert pick_best([a, tie], "auc") is tie
    assert pick_best([tie, a], "auc") is tie
    assert "wide_deep v1 auc 0.7000 (gates passed)" in comparison([a, c], "auc")
    assert "(gates failed)" in comparison([a, c], "auc")


def test_registry_and_tracking_sections_are_validated() -> None:
    config = parse_config({})
    assert config.registry.serving_model == "rankflow-ctr"
    assert config.registry.model_names.of("dcn") == "rankflow-dcn"
    assert config.tracking.experiment == "rankflow-ctr"
    assert config.flat()["registry.gates.min_auc"] == 0.6
    with pytest.raises(ConfigError, match=r"registry\.gates\.min_aucc: unknown key"):
        parse_config({"registry": {"gates": {"min_aucc": 0.7}}})
    with pytest.raises(ConfigError, match="must differ"):
        parse_config({"registry": {"serving_model": "rankflow-dcn"}})
    with pytest.raises(ConfigError, match="both"):
        parse_config({"registry": {"model_names": {"wide_deep": "x", "dcn": "x"}}})
    with pytest.raises(ConfigError, match="low > high"):
        parse_config({"registry": {"gates": {"calibration_ratio": [1.2, 0.8]}}})
    partial = parse_config({"registry": {"model_names": {"dcn": "my-dcn"}}})
    assert partial.registry.model_names.wide_deep == "rankflow-wide-deep"


def test_tracking_uri_precedence(tmp_path: Path) -> None:
    """An explicit setting > MLFLOW_TRACKING_URI (both via Settings) > tracking.uri > SQLite."""
    paths = StatePaths(tmp_path)
    plain = Settings.resolve(home=tmp_path, environ={})
    assert default_tracking_uri(paths) == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert resolve_tracking_uri(TrackingConfig(), plain) == default_tracking_uri(paths)
    configured = TrackingConfig(uri="http://mlflow.internal:5000")
    assert resolve_tracking_uri(configured, plain) == "http://mlflow.internal:5000"
    from_env = Settings.resolve(
        home=tmp_path, environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5001"}
    )
    assert from_env.mlflow_tracking_uri == "http://127.0.0.1:5001"
    assert resolve_tracking_uri(configured, from_env) == "http://127.0.0.1:5001"
    explicit = Settings.resolve(
        mlflow_tracking_uri="http://explicit:1",
        home=tmp_path,
        environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5001"},
    )
    assert resolve_tracking_uri(configured, explicit) == "http://explicit:1"
