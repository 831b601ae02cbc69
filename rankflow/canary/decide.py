"""The canary's alias moves, each under the promotion lock and only against the champion the
canary started with (MLflow has no compare-and-set): set ``@challenger``, then promote or
reject it on the online evidence. Each first settles a plan a killed process left pending
(:func:`settle_interrupted`), so that it decides on aliases that are a whole plan's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankflow.canary.context import CanaryContext
from rankflow.canary.outcome import CanaryOutcome
from rankflow.canary.rollback import clear_rolled_back
from rankflow.registry.aliases import (
    AppliedPlan,
    PromotionConflict,
    actor,
    aliases_of,
    apply_plan,
    read_serving_state,
    recover_interrupted,
    serving_version,
)
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    AliasMove,
    PromotionPlan,
    canary_promotion,
    reject_challenger,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.canary.stats import OnlineDecision
    from rankflow.registry.gates import Candidate
    from rankflow.settings import Settings


def settle_interrupted(settings: Settings, client: MlflowClient, serving: str) -> list[str]:
    """At a canary's start, under the promotion lock: finish or set aside a plan a killed
    process left pending, before the canary reads the champion it trains against; the stage
    line saying what was found (none if nothing was)."""
    with promotion_lock(settings, serving):
        line = _recover(client, serving, actor("rankflow canary"))
    return [] if line is None else [line]


def _recover(client: MlflowClient, serving: str, by: str) -> str | None:
    """The promotion lock's holder settles a pending plan (see recover_interrupted)."""
    recovered = recover_interrupted(client, serving, by=by)
    return None if recovered is None else recovered.describe()


def set_challenger(ctx: CanaryContext, candidate: Candidate, why: str) -> str:
    """Register the challenger in the serving model and point ``@challenger`` at it, only if
    ``@champion`` is still the version this canary compared against."""
    reason = f"canary challenger against v{ctx.champion}: {why}"
    with promotion_lock(ctx.settings, ctx.serving):
        _stage_recovery(ctx)
        current = aliases_of(ctx.client, ctx.serving).get(CHAMPION)
        if current != ctx.champion:
            raise PromotionConflict(
                f"{ctx.serving}: @champion moved from v{ctx.champion} to v{current} while the "
                "challenger trained; start a new canary"
            )
        version = serving_version(ctx.client, ctx.serving, candidate, reason)
        plan = PromotionPlan(
            "challenger",
            "",
            (AliasMove(CHALLENGER, reason, version=version),),
            CHALLENGER,
            ctx.champion,
        )
        apply_plan(ctx.client, ctx.serving, plan, by=_by(ctx))
    ctx.stage(f"@challenger -> {ctx.serving} v{version}")
    return version


def _by(ctx: CanaryContext) -> str:
    return actor(f"canary run {ctx.run_id}")


def _stage_recovery(ctx: CanaryContext) -> None:
    line = _recover(ctx.client, ctx.serving, _by(ctx))
    if line is not None:
        ctx.stage(line)


def decide(
    ctx: CanaryContext,
    result: CanaryOutcome,
    online: OnlineDecision,
    version: str,
    versions: list[tuple[str, str]],
) -> CanaryOutcome:
    """Promote / reject / leave for more traffic, under the lock, against the started champion."""
    label = result.challenger["label"] if result.challenger else f"v{version}"
    if online.verdict == "continue":
        result.decision = "inconclusive"
        result.reason = f"{label} stays @challenger: {online.reason}"
        return ctx.finish(result, versions)
    client, serving = ctx.client, ctx.serving
    try:
        with promotion_lock(ctx.settings, serving):
            _stage_recovery(ctx)
            state = read_serving_state(client, serving)
            if online.verdict == "promote":
                reason = f"canary promoted {label}: {online.reason}"
                plan = canary_promotion(state, version, reason, ctx.champion)
            else:
                plan = reject_challenger(state, version, online.reason, ctx.champion)
            applied: AppliedPlan = apply_plan(client, serving, plan, by=_by(ctx))
    except PromotionConflict as conflict:
        result.decision = "aborted"
        result.reason = f"{label} not promoted: {conflict}"
        ctx.stage(result.reason)
        return ctx.finish(result, versions)
    promoted = online.verdict == "promote"
    if promoted:
        clear_rolled_back(client, serving, version)
    result.decision = "promoted" if promoted else "rejected_online"
    result.reason = applied.describe(serving) if promoted else f"{label}: {online.reason}"
    return ctx.finish(result, versions)
