"""The simulation's truth report beside a canary decision: was it right? It judges how well each
arm ranked, not the click rates of the users it happened to serve."""

from __future__ import annotations

import pytest

from rankflow.canary.stats import OnlineDecision
from rankflow.sim.truth import truth_report


def _decision(verdict: str) -> OnlineDecision:
    return OnlineDecision(verdict, "rule", 0.5, 0.1, 0.1, 1000, 1000, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "verdict, right", [("promote", True), ("reject", False), ("continue", None)]
)
def test_the_truth_judges_ranking_not_the_arms_user_mix(verdict: str, right: bool | None) -> None:
    """The challenger's users click less (lower expected CTR whatever is shown), but it reaches a
    larger share of what the truth's own order would reach for them: it ranks better."""
    arms = {
        "champion": {"expected_ctr": 0.120, "expected_ctr_oracle_order": 0.180},  # 66.7%
        "challenger": {"expected_ctr": 0.115, "expected_ctr_oracle_order": 0.160},  # 71.9%
    }
    report = truth_report(_decision(verdict), arms)
    assert report["truly_better"] == "challenger"
    assert report["expected_ctr_lift"] < 0 < report["share_of_oracle_lift"]
    assert report["decision_right"] is right
    assert "71.9%" in report["verdict_was"] and "66.7%" in report["verdict_was"]


def test_the_truth_has_nothing_to_say_about_a_single_arm() -> None:
    only = {"champion": {"expected_ctr": 0.1, "expected_ctr_oracle_order": 0.2}}
    assert truth_report(_decision("promote"), only) == {}
