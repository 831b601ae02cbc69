"""The offline gate: every branch, on holdouts with a known truth."""

from __future__ import annotations

import numpy as np

from rankflow.canary.gates import offline_gate
from rankflow.config import OfflineGateConfig


def _data(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.5, 1.0, n)
    truth = 1 / (1 + np.exp(-logit))
    labels = (rng.random(n) < truth).astype(float)
    noisy = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.2, n))))
    return labels, truth, noisy


CONFIG = OfflineGateConfig(bootstrap_resamples=100)


def test_a_better_challenger_passes_with_its_numbers() -> None:
    labels, truth, noisy = _data(0)
    result = offline_gate(labels, noisy, truth, CONFIG)
    assert result.passed, result.summary()
    assert result.intervals["auc"].low > 0
    assert result.rows == labels.size
    assert "auc difference +" in result.summary()


def test_a_challenger_trained_on_shuffled_labels_fails() -> None:
    labels, truth, _ = _data(1)
    shuffled = np.random.default_rng(2).permutation(truth)  # scores unrelated to the rows
    result = offline_gate(labels, truth, shuffled, CONFIG)
    assert not result.passed
    assert any("auc" in r and "inferior" in r for r in result.reasons)


def test_a_miscalibrated_challenger_fails_the_guardrail_only() -> None:
    labels, truth, _ = _data(3)
    inflated = np.clip(truth * 1.6, 0, 0.99)  # same ranking, calibration off
    config = OfflineGateConfig(bootstrap_resamples=100, logloss_margin=1.0)
    result = offline_gate(labels, truth, inflated, config)
    assert not result.passed
    assert [r for r in result.reasons if "inferior" in r or "worse" in r] == [
        r for r in result.reasons if "ECE" in r
    ]


def test_a_failing_data_check_blocks_but_drift_does_not() -> None:
    labels, truth, noisy = _data(4)
    drift = offline_gate(labels, noisy, truth, CONFIG, gap_verdicts={"drift": "fail"})
    assert drift.passed and drift.blocked_by == []
    skew = offline_gate(labels, noisy, truth, CONFIG, gap_verdicts={"feature_skew": "fail"})
    assert not skew.passed and skew.blocked_by == ["feature_skew"]
    assert skew.to_dict()["blocked_by"] == ["feature_skew"]
