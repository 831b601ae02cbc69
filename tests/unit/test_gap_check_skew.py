"""Feature and score skew judge a day by its rate of differing rows, and leave requests with a
past ``time`` (which the online store cannot answer) out of the comparison with the offline
point-in-time values, counting and naming them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankflow.monitoring import checks
from rankflow.monitoring.config import MonitoringConfig

VIEWS = {"user_ctr_28d": "user_daily_stats"}
COLUMN = "user_daily_stats__user_ctr_28d"
DAY = pd.Timestamp("2026-03-11", tz="UTC")


class LinearScorer:
    """P(click) = a tenth of the feature: enough to tell which inputs a score came from."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["user_ctr_28d"].to_numpy(np.float64) / 10


def _day(rows: int, past: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` served rows of one day, scored as served, and the offline recomputation. The
    first ``past`` rows come from one request with a past ``time``: served today's value
    (stamped at the day's start, after the request's time), recomputed as of that time."""
    rng = np.random.default_rng(0)
    value = rng.uniform(0.01, 0.2, rows)
    when = pd.Series(DAY + pd.to_timedelta(rng.integers(60, 86_000, rows), unit="s"))
    request = np.array([f"rq-{i // 5:05d}" for i in range(rows)], dtype=object)
    when.iloc[:past] = DAY - pd.Timedelta(days=3)
    request[:past] = "hand-made"
    served = pd.DataFrame(
        {
            "__request_id": request,
            "item_id": np.arange(rows),
            "__log_timestamp": when,
            "model_version": "3",
            COLUMN: value,
            f"{COLUMN}__timestamp": DAY,
        }
    )
    served["p_click"] = value / 10
    offline = pd.DataFrame({"user_ctr_28d": value.copy()}, index=served.index)
    offline.iloc[:past, 0] = value[:past] + 0.05  # the value as of three days before
    return served, offline


def _inputs(served: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"user_ctr_28d": served[COLUMN].to_numpy()}, index=served.index)


def _score_skew(served: pd.DataFrame, offline: pd.DataFrame) -> checks.CheckResult:
    return checks.score_skew(
        served, _inputs(served), offline, {"3": LinearScorer()}, MonitoringConfig()
    )


def test_a_request_with_a_past_time_is_not_skew_and_is_named() -> None:
    served, offline = _day(3000, past=4)
    assert checks.served_after_request(served).sum() == 4
    scores = _score_skew(served, offline)
    assert scores.verdict == "pass", scores.line()
    assert "4 rows of 1 request(s)" in scores.summary and "hand-made" in scores.summary
    features = checks.feature_skew(served, offline, VIEWS, MonitoringConfig())
    assert features.verdict == "pass", features.line()
    assert "hand-made" in features.summary
    assert features.details["features"]["user_ctr_28d"]["mismatch_rate"] == 0.0


def test_many_past_time_rows_do_not_fail_feature_skew() -> None:
    served, offline = _day(1000, past=40)  # 4% of the rows: over the 1% fail rate
    result = checks.feature_skew(served, offline, VIEWS, MonitoringConfig())
    assert result.verdict == "pass", result.line()
    assert result.details["past_time_rows"] == 40


def test_one_odd_row_among_thousands_does_not_fail_the_day() -> None:
    served, offline = _day(5000)
    served.loc[10, "p_click"] += 0.3  # one row, far off
    result = _score_skew(served, offline)
    assert result.verdict == "pass", result.line()
    assert result.details["versions"]["3"]["rows_beyond_tolerance"] == 1
    assert result.details["versions"]["3"]["max_abs_diff"] == pytest.approx(0.3)


def test_a_rate_of_differing_scores_fails_naming_rows_cause_and_remedy() -> None:
    served, offline = _day(5000)
    served.loc[100:199, "p_click"] += 0.01  # 2% of the rows, on the very features served
    result = _score_skew(served, offline)
    assert result.verdict == "fail"
    assert "100 of 5,000 rows (2.00%)" in result.summary
    named = result.summary.split("request ids ", 1)[1].split(")", 1)[0].split(", ")
    assert len(set(named)) == 3  # three distinct requests, not one request's rows
    assert all("rq-00020" <= name <= "rq-00039" for name in named)  # the rows that differ
    assert "model or transform" in result.summary and "/readyz" in result.summary


def test_scores_that_differ_only_on_offline_features_point_at_the_features() -> None:
    served, offline = _day(5000)
    offline.iloc[:200, 0] += 0.05  # 4% of the rows recomputed differently, no past time
    result = _score_skew(served, offline)
    assert result.verdict == "fail"
    assert "200 of 5,000 rows" in result.summary
    assert "feature_skew" in result.summary and "model or transform" not in result.summary


def test_a_version_without_a_model_fails_naming_it() -> None:
    served, offline = _day(500)
    result = checks.score_skew(served, _inputs(served), offline, {}, MonitoringConfig())
    assert result.verdict == "fail" and "v3" in result.summary
