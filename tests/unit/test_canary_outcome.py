"""Every canary decision's summary ends with what the operator does next."""

from __future__ import annotations

from typing import get_args

import pytest

from rankflow.canary.outcome import CanaryDecision, CanaryOutcome


def _outcome(decision: str, challenger: dict | None = None) -> CanaryOutcome:
    return CanaryOutcome(
        decision=decision,  # type: ignore[arg-type]
        reason="because",
        serving_model="rankflow-ctr",
        champion_before="3",
        aliases={"champion": "3"},
        challenger=challenger,
    )


@pytest.mark.parametrize("decision", get_args(CanaryDecision))
def test_every_decision_ends_with_a_next_step(decision: str) -> None:
    outcome = _outcome(decision)
    last = outcome.summary().splitlines()[-1]
    assert last.startswith("  next: ") and len(last) > 30
    assert outcome.to_dict()["next_step"] == outcome.next_step
    assert outcome.summary().startswith(f"canary: {decision.upper()}: because")


def test_an_inconclusive_phase_says_what_to_do_for_its_kind() -> None:
    simulated = _outcome("inconclusive", {"kind": "wide_deep", "label": "x"}).next_step
    assert "canary.traffic_impressions" in simulated and "`rankflow canary`" in simulated
    live = _outcome("inconclusive", {"kind": "live", "label": "x"}).next_step
    assert "--look-only" in live and "traffic_impressions" not in live
