"""The gap checks' statistics: each one moves when the data moves and stays put when not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankflow.monitoring.config import MonitoringConfig
from rankflow.monitoring.stats import (
    adversarial_validation,
    calibration_error,
    compare_scores,
    compare_values,
    grade,
    ks,
    psi,
    worst,
)


def test_grade_and_worst() -> None:
    assert grade(0.05, 0.1, 0.2) == "pass"
    assert grade(0.1, 0.1, 0.2) == "warn"
    assert grade(0.25, 0.1, 0.2) == "fail"
    assert grade(float("nan"), 0.1, 0.2) == "warn"
    assert worst(["pass", "fail", "warn"]) == "fail"
    assert worst([]) == "pass"


def test_compare_values_counts_nulls_and_tolerance() -> None:
    cmp = compare_values([1.0, 2.0, None, 4.0, 5.0], [1.0, 2.0000000001, None, None, 5.5], 1e-6)
    assert cmp.rows == 5
    assert cmp.mismatches == 2  # a null on one side only, and 5.0 vs 5.5
    assert cmp.max_abs_diff == pytest.approx(0.5)
    assert "4.0" in cmp.example
    strings = compare_values(["a", "b", None], ["a", "c", None])
    assert strings.mismatches == 1 and np.isnan(strings.max_abs_diff)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert psi(a, b) < 0.02
    assert psi(a, rng.normal(1.0, 1, 5000)) > 0.25
    # Nulls are a bin of their own: more nulls is drift.
    with_nulls = np.where(rng.random(5000) < 0.3, np.nan, b)
    assert psi(a, with_nulls) > 0.25
    cats = pd.Series(rng.choice(["x", "y", "z"], 5000, p=[0.6, 0.3, 0.1]))
    assert psi(cats, cats.sample(frac=1, random_state=1)) < 0.01
    assert psi(cats, pd.Series(rng.choice(["x", "y", "z"], 5000, p=[0.1, 0.3, 0.6]))) > 0.5


def test_ks_detects_a_shift() -> None:
    rng = np.random.default_rng(1)
    same, p_same = ks(rng.normal(0, 1, 3000), rng.normal(0, 1, 3000))
    moved, p_moved = ks(rng.normal(0, 1, 3000), rng.normal(0.5, 1, 3000))
    assert same < 0.05 < moved
    assert p_moved < 1e-6 < p_same


def _frame(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "steady": rng.normal(0, 1, n),
            "moving": rng.normal(shift, 1, n),
            "segment": rng.choice(["a", "b", "c"], n),
        }
    )


@pytest.mark.slow
def test_adversarial_validation_names_what_moved() -> None:
    rng = np.random.default_rng(2)
    old = _frame(rng, 1500, 0.0)
    calm = adversarial_validation(old, _frame(rng, 1500, 0.0), seed=0)
    assert abs(calm.lift) < 0.06
    moved = adversarial_validation(old, _frame(rng, 1500, 1.5), seed=0)
    assert moved.auc > 0.8 and moved.lift > 0.25
    assert moved.held_out_rows == (1500, 1500)  # every row held out once (row folds)
    assert moved.top_features[0][0] == "moving"


def test_compare_scores_counts_rows_beyond_the_tolerance_and_names_the_worst() -> None:
    logged = np.array([0.1, 0.2, 0.3, 0.4, np.nan, np.nan])
    offline = np.array([0.1, 0.2003, 0.3 + 1e-6, 0.5, 0.1, np.nan])
    cmp = compare_scores(logged, offline, tolerance=1e-4)
    assert (cmp.rows, cmp.beyond) == (6, 3)  # 0.0003, 0.1 and a score missing on one side
    assert cmp.rate == pytest.approx(0.5)
    assert cmp.worst == [4, 3, 1]  # largest difference first
    assert np.isinf(cmp.max_abs_diff)
    assert compare_scores([0.5], [0.5], 1e-4).worst == []


def test_calibration_error() -> None:
    y = np.array([0, 0, 0, 1] * 100)
    assert calibration_error(y, np.full(len(y), 0.25)) == pytest.approx(0.0)
    assert calibration_error(y, np.full(len(y), 0.5)) == pytest.approx(1.0)


def test_thresholds_must_be_ordered() -> None:
    from rankflow.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="psi"):
        parse_config({"monitoring": {"psi": {"warn": 0.5, "fail": 0.1}}})
    assert MonitoringConfig().psi.fail == 0.3
