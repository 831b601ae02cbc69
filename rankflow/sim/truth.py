"""Was the canary's decision right? The simulator knows, production would not: a report
beside the decision, never an input to it."""

from __future__ import annotations

from typing import Any

from rankflow.canary.stats import OnlineDecision
from rankflow.registry.promotion import CHALLENGER, CHAMPION


def truth_report(decision: OnlineDecision, arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Was the decision right? The simulator knows, production would not.

    Each arm is judged by the share of the achievable CTR it reached: the expected CTR (true
    probabilities) of what it showed over that of the truth's own best order for the same
    requests. The raw expected CTRs are not compared: the arms serve different users (a hash
    split), and the users' own click rates differ between the halves by more than the models
    do (10% on the e2e data, against model effects of 1-3%); over the same requests the user
    mix cancels.
    """
    a, b = arms.get(CHAMPION), arms.get(CHALLENGER)
    if a is None or b is None:
        return {}
    share_a, share_b = (_share_of_oracle(arm) for arm in (a, b))
    lift = share_b - share_a
    better = "challenger" if lift > 0 else "champion"
    right = {
        "promote": lift > 0,
        "reject": lift <= 0,
        "continue": None,
    }[decision.verdict]
    shown = {True: "right", False: "wrong", None: "undecided"}[right]
    return {
        "share_of_oracle_champion": share_a,
        "share_of_oracle_challenger": share_b,
        "share_of_oracle_lift": lift,
        "expected_ctr_lift": b["expected_ctr"] - a["expected_ctr"],
        "truly_better": better,
        "decision_right": right,
        "verdict_was": f"{shown}: the {better} truly ranks better (it reached "
        f"{max(share_a, share_b):.1%} of the achievable CTR on its requests, the other "
        f"{min(share_a, share_b):.1%})",
    }


def _share_of_oracle(arm: dict[str, Any]) -> float:
    best = arm["expected_ctr_oracle_order"]
    return arm["expected_ctr"] / best if best > 0 else float("nan")
