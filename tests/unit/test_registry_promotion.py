"""Promotion as a pure decision: every branch of decide_promotion and promote_to_champion."""

from __future__ import annotations

import pytest

from rankflow.config import RegistryConfig, parse_config
from rankflow.registry.gates import Candidate, GateResult
from rankflow.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasMove,
    AliasTarget,
    PromotionPlan,
    ServingState,
    decide_promotion,
    promote_to_champion,
)

PASSED = GateResult(checks={"min_auc": "pass: AUC 0.7 >= 0.6"}, failures=())
FAILED = GateResult(checks={"min_auc": "FAIL"}, failures=("min_auc: AUC 0.5 < 0.6",))
SERVING = "rankflow-ctr"


def candidate(kind: str, auc: float, gate: GateResult = PASSED, version: str = "1") -> Candidate:
    return Candidate(
        kind=kind,
        name=f"rankflow-{kind}",
        version=version,
        run_id=f"run-{kind}",
        source=f"models:/m-{kind}",
        model_id=f"m-{kind}",
        fingerprint=f"fp-{kind}-{version}",
        metrics={"auc": auc, "logloss": 0.4},
        gate=gate,
    )


def registry(**overrides: object) -> RegistryConfig:
    return parse_config({"registry": overrides}).registry


def state(**aliases: AliasTarget) -> ServingState:
    return ServingState(SERVING, aliases)


WD, DCN = candidate("wide_deep", 0.71), candidate("dcn", 0.72)
CHAMP = AliasTarget("3", fingerprint="fp-old", kind="wide_deep")


def test_no_champion_yet_the_better_gated_candidate_becomes_champion() -> None:
    plan = decide_promotion([WD, DCN], state(), registry())
    assert plan.decision == "first_champion"
    assert plan.promoted == CHAMPION
    assert plan.expected_champion is None
    (move,) = plan.moves
    assert move.alias == CHAMPION and move.candidate == DCN and move.version is None
    assert move.reason.startswith("first champion: DCN-V2 (rankflow-dcn v1) passed")
    assert "best test auc" in move.reason
    # The version is known only once the apply step has registered it in the serving model.
    assert plan.describe(SERVING, {CHAMPION: "1"}).startswith("@champion -> rankflow-ctr v1: ")


def test_select_by_a_lower_is_better_metric() -> None:
    wd = Candidate(**{**WD.__dict__, "metrics": {"auc": 0.71, "logloss": 0.30}})
    plan = decide_promotion([wd, DCN], state(), registry(select_by="logloss"))
    assert plan.moves[0].candidate == wd


def test_only_the_candidate_that_passes_its_gates_can_be_champion() -> None:
    failing_better = candidate("dcn", 0.80, FAILED)
    plan = decide_promotion([WD, failing_better], state(), registry())
    assert plan.moves[0].candidate == WD


def test_none_pass_moves_nothing_and_names_the_failures() -> None:
    plan = decide_promotion(
        [candidate("wide_deep", 0.5, FAILED), candidate("dcn", 0.5, FAILED)], state(), registry()
    )
    assert plan.decision == "no_champion"
    assert plan.moves == () and plan.promoted is None
    assert plan.reason.startswith("no champion: no candidate passed the quality gates")
    assert "wide_deep: min_auc" in plan.reason and "dcn: min_auc" in plan.reason
    assert plan.describe(SERVING) == plan.reason


def test_a_tie_goes_to_the_earlier_kind_name_in_either_order() -> None:
    a, b = candidate("wide_deep", 0.7), candidate("dcn", 0.7)
    for order in ([a, b], [b, a]):
        assert decide_promotion(order, state(), registry()).moves[0].candidate == b


def test_champion_exists_register_only_moves_nothing() -> None:
    plan = decide_promotion([WD, DCN], state(champion=CHAMP), registry())
    assert plan.decision == "champion_kept"
    assert plan.moves == () and plan.promoted is None
    assert plan.expected_champion == "3"
    assert plan.reason.startswith("champion stays rankflow-ctr v3 (wide_deep)")
    assert "this run registered [wide_deep v1 auc 0.7100" in plan.reason


def test_champion_exists_challenger_points_challenger_at_the_best() -> None:
    plan = decide_promotion(
        [WD, DCN], state(champion=CHAMP), registry(when_champion_exists="challenger")
    )
    assert plan.decision == "challenger" and plan.promoted == CHALLENGER
    assert plan.expected_champion == "3"
    (move,) = plan.moves
    assert move.alias == CHALLENGER and move.candidate == DCN
    assert move.reason.startswith("challenger: DCN-V2 passed the quality gates")
    text = plan.describe(SERVING, {CHALLENGER: "4"})
    assert text.startswith("champion stays rankflow-ctr v3")
    assert "; @challenger -> v4: challenger:" in text


@pytest.mark.parametrize(
    ("aliases", "expected"),
    [
        ({"champion": AliasTarget("3", fingerprint=DCN.fingerprint)}, "is the champion itself"),
        (
            {"champion": CHAMP, "challenger": AliasTarget("4", fingerprint=DCN.fingerprint)},
            "@challenger is already v4",
        ),
    ],
)
def test_challenger_is_not_moved_when_it_would_change_nothing(
    aliases: dict[str, AliasTarget], expected: str
) -> None:
    plan = decide_promotion(
        [WD, DCN], state(**aliases), registry(when_champion_exists="challenger")
    )
    assert plan.moves == () and plan.promoted is None
    assert expected in plan.reason


def test_challenger_mode_with_no_passing_candidate_moves_nothing() -> None:
    plan = decide_promotion(
        [candidate("dcn", 0.5, FAILED)],
        state(champion=CHAMP),
        registry(when_champion_exists="challenger"),
    )
    assert plan.moves == ()
    assert "no challenger: no candidate passed the gates" in plan.reason


def test_a_champion_whose_version_vanished_counts_as_no_champion() -> None:
    gone = AliasTarget("3", exists=False)
    plan = decide_promotion([WD, DCN], state(champion=gone), registry())
    assert plan.decision == "first_champion"
    # No @previous for a version that no longer exists; the apply step checks @champion is v3.
    assert [m.alias for m in plan.moves] == [CHAMPION]
    assert plan.expected_champion == "3"

    failed = [candidate("dcn", 0.5, FAILED)]
    plan = decide_promotion(failed, state(champion=gone), registry())
    assert plan.decision == "no_champion"
    (move,) = plan.moves
    assert move.alias == CHAMPION and move.deletes
    assert "v3 no longer exists" in move.reason
    assert "@champion removed: v3 no longer exists" in plan.describe(SERVING)


def test_promote_to_champion_writes_previous_before_champion() -> None:
    plan = promote_to_champion(state(champion=CHAMP, challenger=AliasTarget("5")), "5", "won")
    assert plan.decision == "promote" and plan.promoted == CHAMPION
    assert plan.expected_champion == "3"
    assert [(m.alias, m.version) for m in plan.moves] == [(PREVIOUS, "3"), (CHAMPION, "5")]
    assert plan.moves[0].reason == "replaced as champion by v5"
    assert plan.moves[1].reason == "won"


def test_promote_to_champion_without_a_champion_or_when_already_champion() -> None:
    first = promote_to_champion(state(), "2", "first")
    assert [(m.alias, m.version) for m in first.moves] == [(CHAMPION, "2")]
    same = promote_to_champion(state(champion=CHAMP), 3, "again")  # versions compare as strings
    assert same.moves == () and same.promoted is None


def test_a_move_names_a_version_or_a_candidate_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        AliasMove(CHAMPION, "x", version="1", candidate=WD)
    assert AliasMove(CHAMPION, "x").deletes
    assert isinstance(PromotionPlan("no_champion", "r"), PromotionPlan)


# --------------------------------------------------------------------------- the canary's plans
def test_canary_promotion_expects_the_champion_it_started_against_and_drops_challenger() -> None:
    from rankflow.registry.promotion import canary_promotion

    current = state(champion=CHAMP, challenger=AliasTarget("5"))
    plan = canary_promotion(current, "5", "online CTR higher", started_against="3")
    assert plan.decision == "promote" and plan.promoted == CHAMPION
    assert plan.expected_champion == "3"
    assert [(m.alias, m.version, m.deletes) for m in plan.moves] == [
        (PREVIOUS, "3", False),
        (CHAMPION, "5", False),
        (CHALLENGER, None, True),
    ]
    # Decided against a champion that has since moved: the plan still expects the old one,
    # so apply_plan refuses it (the compare half of compare-and-set).
    moved = state(champion=AliasTarget("4"), challenger=AliasTarget("5"))
    assert canary_promotion(moved, "5", "x", started_against="3").expected_champion == "3"


def test_a_canary_whose_own_version_was_promoted_by_another_still_carries_a_checked_move() -> None:
    """Two canaries on the same inputs share one challenger version; the first promotes it and
    drops @challenger. The second's plan must not be an empty "already champion" (apply_plan
    checks nothing for an empty plan, and it would report a promotion it never made)."""
    from rankflow.registry.promotion import canary_promotion

    after_the_other = state(champion=AliasTarget("5"), previous=CHAMP)
    plan = canary_promotion(after_the_other, "5", "online CTR higher", started_against="3")
    assert plan.moves and plan.expected_champion == "3"
    assert [(m.alias, m.version) for m in plan.moves] == [(CHAMPION, "5")]


def test_canary_promotion_leaves_another_canarys_challenger_alone() -> None:
    from rankflow.registry.promotion import canary_promotion

    plan = canary_promotion(
        state(champion=CHAMP, challenger=AliasTarget("6")), "5", "x", started_against="3"
    )
    assert [m.alias for m in plan.moves] == [PREVIOUS, CHAMPION]


def test_reject_removes_only_its_own_challenger() -> None:
    from rankflow.registry.promotion import reject_challenger

    own = reject_challenger(
        state(champion=CHAMP, challenger=AliasTarget("5")), "5", "CTR lower", "3"
    )
    assert own.decision == "reject" and own.promoted is None and own.expected_champion == "3"
    assert [(m.alias, m.deletes) for m in own.moves] == [(CHALLENGER, True)]
    other = reject_challenger(state(champion=CHAMP, challenger=AliasTarget("6")), "5", "x", "3")
    assert other.moves == ()


def test_rollback_restores_previous_and_removes_it() -> None:
    from rankflow.registry.promotion import rollback_plan

    plan = rollback_plan(state(champion=AliasTarget("5"), previous=CHAMP), "CTR fell")
    assert plan.decision == "rollback" and plan.expected_champion == "5"
    assert [(m.alias, m.version, m.deletes) for m in plan.moves] == [
        (CHAMPION, "3", False),
        (PREVIOUS, None, True),
    ]
    assert "rolled back from v5: CTR fell" in plan.moves[0].reason


@pytest.mark.parametrize(
    "aliases",
    [{}, {"champion": AliasTarget("5")}, {"previous": AliasTarget("3", exists=False)}],
    ids=["empty", "no-previous", "previous-deleted"],
)
def test_rollback_without_a_live_previous_is_refused(aliases: dict) -> None:
    from rankflow.registry.promotion import NothingToRollBack, rollback_plan

    with pytest.raises(NothingToRollBack, match="no @previous"):
        rollback_plan(state(**aliases), "why")


@pytest.mark.parametrize(
    "aliases",
    [
        {"champion": AliasTarget("3"), "previous": AliasTarget("3")},
        {"champion": AliasTarget(3), "previous": AliasTarget("3")},  # versions compare as strings
    ],
    ids=["same", "int-and-str"],
)
def test_rollback_when_previous_is_the_champion_is_refused_naming_the_version(
    aliases: dict,
) -> None:
    """A promotion killed between its alias writes leaves @previous on the champion; rolling
    back "to" it would demote nothing and mark the live champion rolled back."""
    from rankflow.registry.promotion import NothingToRollBack, rollback_plan

    with pytest.raises(NothingToRollBack) as refused:
        rollback_plan(state(**aliases), "why")
    assert str(refused.value) == (
        f"{SERVING}: @previous is v3, the same version as @champion: nothing to roll back to"
    )
