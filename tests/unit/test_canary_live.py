"""The live canary phase's pure parts: the phase file, the label join and the look's decision
(rankflow/canary/live.py). The I/O path runs for real in tests/integration/test_canary_live.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from rankflow.canary.live import (
    LivePhase,
    LivePhaseError,
    join_labels,
    phase_path,
    pre_period,
    read_phase,
    start_phase,
    take_look,
    write_phase,
)
from rankflow.config import OnlineGateConfig
from rankflow.paths import StatePaths

RULE = OnlineGateConfig(alpha=0.05, tau=0.01, min_views=500, max_views=20_000)
START = datetime(2026, 3, 12, tzinfo=UTC)


def _phase(looks: list | None = None) -> LivePhase:
    return LivePhase("rankflow-ctr", "3", "5", START.isoformat(), "run", 14, looks or [])


def _traffic(
    seed: int, lift: float, users: int = 3000, base: float = 0.08
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled served rows (arm by user, heterogeneous users) and their pre-period."""
    rng = np.random.default_rng(seed)
    propensity = base * np.exp(rng.normal(0, 0.5, users) - 0.125)
    arm = np.where(rng.random(users) < 0.5, "champion", "challenger")
    views = rng.poisson(6, users) + 1
    p = np.clip(propensity * np.where(arm == "challenger", 1 + lift, 1.0), 0, 1)
    rows = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), views),
            "arm": np.repeat(arm, views),
            "p_click": np.repeat(propensity, views),
        }
    )
    rows["label"] = (rng.random(len(rows)) < np.repeat(p, views)).astype(int)
    pre_views = rng.poisson(20, users) + 1
    pre = pd.DataFrame({"user_id": np.arange(users), "label": 0}).loc[
        lambda f: f.index.repeat(pre_views)
    ]
    pre["label"] = (rng.random(len(pre)) < np.repeat(propensity, pre_views)).astype(int)
    return rows, pre_period(pre.reset_index(drop=True))


def test_a_look_without_labelled_traffic_continues_and_is_recorded_as_json() -> None:
    empty = pd.DataFrame(columns=["request_id", "item_id", "user_id", "arm", "p_click", "label"])
    look = take_look(_phase(), empty, None, RULE)
    assert look.decision.verdict == "continue"
    assert look.phase.looks[-1]["views_champion"] == 0
    assert look.phase.looks[-1]["variance"] is None  # no estimate yet: null, not inf
    json.dumps(look.to_dict())  # the phase file and the MLflow record take it as it is


def test_a_clear_lift_promotes_a_clear_loss_rejects_and_no_effect_reaches_the_horizon() -> None:
    rows, pre = _traffic(seed=1, lift=0.4)
    assert take_look(_phase(), rows, pre, RULE).decision.verdict == "promote"
    rows, pre = _traffic(seed=2, lift=-0.4)
    assert take_look(_phase(), rows, pre, RULE).decision.verdict == "reject"
    rows, pre = _traffic(seed=3, lift=0.0, users=3000)
    horizon = RULE.model_copy(update={"max_views": 5000})
    decision = take_look(_phase(), rows, pre, horizon).decision
    assert decision.verdict == "reject" and "horizon" in decision.reason


@pytest.mark.slow
def test_no_effect_is_promoted_at_most_at_the_declared_rate_over_many_looks() -> None:
    """Always valid: looking after every day of an A/A phase promotes (or rejects) in at most
    alpha of the phases, however many looks are taken."""
    decided = 0
    phases = 60
    for seed in range(phases):
        rows, pre = _traffic(seed=100 + seed, lift=0.0, users=2000)
        phase = _phase()
        days = np.array_split(rows["user_id"].unique(), 5)  # users arriving over five days
        seen: list[np.ndarray] = []
        for day in days:
            seen.append(day)
            look = take_look(phase, rows[rows["user_id"].isin(np.concatenate(seen))], pre, RULE)
            phase = look.phase
            if look.decision.verdict != "continue":
                decided += 1
                break
    assert decided / phases <= RULE.alpha + 2 * np.sqrt(RULE.alpha * (1 - RULE.alpha) / phases)


def test_looks_accumulate_in_the_phase() -> None:
    rows, pre = _traffic(seed=4, lift=0.0, users=400)
    first = take_look(_phase(), rows.iloc[:800], pre, RULE)
    second = take_look(first.phase, rows, pre, RULE)
    assert [x["look"] for x in second.phase.looks] == [1, 2]
    assert second.phase.looks[1]["views_champion"] + second.phase.looks[1]["views_challenger"] == (
        len(rows)
    )
    assert second.decision.looks == 2


def test_labels_join_on_request_and_item_and_must_agree_on_the_user() -> None:
    served = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r2", "r3"],
            "item_id": [10, 11, 10, 12],
            "user_id": [1, 1, 2, 3],
            "arm": ["champion", "champion", "challenger", "challenger"],
            "p_click": [0.1, 0.2, 0.3, 0.4],
        }
    )
    labels = pd.DataFrame(
        {
            "request_id": ["r1", "r2", "r3", "r9"],
            "item_id": [11, 10, 12, 10],
            "user_id": [1, 2, 99, 1],  # r3 was served to user 3, the impression is user 99's
            "label": [1, 0, 1, 1],
        }
    )
    joined = join_labels(served, labels)
    assert list(zip(joined["request_id"], joined["item_id"], joined["label"], strict=True)) == [
        ("r1", 11, 1),
        ("r2", 10, 0),
    ]


def test_the_phase_file_round_trips_and_a_corrupt_one_names_itself(tmp_path) -> None:
    paths = StatePaths(tmp_path)
    phase = start_phase(paths, "rankflow-ctr", "3", "5", "run", 14, now=START)
    assert read_phase(paths, "rankflow-ctr") == phase
    assert phase.matches({"champion": "3", "challenger": "5"})
    assert not phase.matches({"champion": "3"})  # @challenger removed by hand
    assert not phase.matches({"champion": "4", "challenger": "5"})  # the champion moved
    write_phase(paths, LivePhase(**{**phase.__dict__, "looks": [{"look": 1}]}))
    assert read_phase(paths, "rankflow-ctr").looks == [{"look": 1}]
    phase_path(paths, "rankflow-ctr").write_text("{not json")
    with pytest.raises(LivePhaseError, match=r"rankflow-ctr\.json"):
        read_phase(paths, "rankflow-ctr")
