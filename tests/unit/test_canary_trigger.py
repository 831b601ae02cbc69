"""Which gap-check verdicts start a canary retrain."""

from __future__ import annotations

import pytest

from rankflow.canary.triggers import retrain_on_gap_verdict
from rankflow.config import parse_config

PASSING = {
    "feature_skew": "pass",
    "score_skew": "pass",
    "drift": "pass",
    "metric_gap": "pass",
    "freshness": "pass",
}


@pytest.mark.parametrize(
    ("failing", "starts"),
    [
        ({}, False),
        ({"drift": "warn"}, False),
        ({"drift": "fail"}, True),
        ({"metric_gap": "fail"}, True),
        ({"feature_skew": "fail"}, False),  # broken data: a retrain would learn it
        ({"freshness": "fail", "score_skew": "fail"}, False),
        ({"feature_skew": "fail", "drift": "fail"}, True),
    ],
)
def test_only_a_failing_check_a_retrain_can_fix_starts_a_canary(failing: dict, starts: bool):
    why = retrain_on_gap_verdict({**PASSING, **failing}, parse_config({}).canary)
    assert (why is not None) == starts
    if starts:
        assert all(name in why for name, v in failing.items() if name in ("drift", "metric_gap"))


def test_the_trigger_can_be_switched_off() -> None:
    config = parse_config({"canary": {"on_gap_fail": False}})
    assert retrain_on_gap_verdict({**PASSING, "drift": "fail"}, config.canary) is None
