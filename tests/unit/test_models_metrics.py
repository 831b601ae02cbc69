"""Metrics: known values, calibration, segments, oracle join by event_id, gap closed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.metrics import (
    auc,
    calibration_ratio,
    entropy,
    evaluate,
    expected_calibration_error,
    logloss,
    normalized_entropy,
)


def test_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))
    # Predicting the base rate everywhere is NE = 1 by definition.
    y = np.array([1, 0, 0, 0])
    assert normalized_entropy(y, np.full(4, 0.25)) == pytest.approx(1.0)
    assert entropy(0.25) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert calibration_ratio(y, np.full(4, 0.5)) == pytest.approx(2.0)


def test_ece_is_zero_when_calibrated_and_grows_when_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.2, 200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.003
    assert expected_calibration_error(y, np.clip(p * 2, 0, 1)) > 0.08


def _frame(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.4, n)
    df = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "label": (rng.random(n) < p).astype(int),
            "device": rng.choice(["mobile", "desktop", None], n),
        }
    )
    return df, pd.Series(p, index=df["event_id"], name="p_click")


def test_evaluate_with_truth_segments_and_baseline() -> None:
    df, truth = _frame()
    shuffled_truth = truth.sample(frac=1.0, random_state=1)  # joined by event_id, not order
    oracle = evaluate(truth.to_numpy(), df, truth=shuffled_truth, segment_col="device")
    assert oracle["gap_closed_auc"] == pytest.approx(1.0)
    assert oracle["gap_closed_logloss"] == pytest.approx(1.0)
    assert oracle["auc"] == oracle["oracle_auc"]
    for key in ("auc_by_device/mobile", "auc_by_device/desktop", "auc_by_device/_null_"):
        assert 0.5 < oracle[key] < 1.0
    assert 0.5 < oracle["auc_by_device/weighted_mean"] < 1.0

    constant = np.full(len(df), df["label"].mean())
    flat = evaluate(constant, df, truth=truth)
    assert flat["gap_closed_logloss"] == pytest.approx(0.0, abs=1e-9)
    assert flat["ne"] == pytest.approx(1.0)

    noisy = np.clip(
        truth.to_numpy() + np.random.default_rng(2).normal(0, 0.1, len(df)), 0.001, 0.999
    )
    half = evaluate(noisy, df, truth=truth, baseline=constant)
    assert 0.0 < half["gap_closed_auc"] < 1.0
    assert half["baseline_auc"] == 0.5


def test_evaluate_errors_name_what_is_missing() -> None:
    df, truth = _frame(50)
    with pytest.raises(ValueError, match=r"2 of 50 event_ids have no true p_click"):
        evaluate(truth.to_numpy(), df, truth=truth.iloc[2:])
    with pytest.raises(ValueError, match="no segment column 'country'"):
        evaluate(truth.to_numpy(), df, segment_col="country")
    with pytest.raises(ValueError, match="49 predictions for 50 rows"):
        evaluate(truth.to_numpy()[:49], df)
    with pytest.raises(ValueError, match="no label column 'clicked'"):
        evaluate(truth.to_numpy(), df, label_col="clicked")
