"""The simulated canary phase: champion and challenger share closed-loop traffic; an
always-valid rule decides.

Traffic is the simulator's closed loop (:func:`rankflow.sim.replay.closed_loop`): the service
ranks each request's candidates with the arm the user hashes to, the top ``k`` are shown at
their ranks, and clicks are drawn from the ground truth of what was shown. The traffic is cut
into ``looks`` batches; after each one the cumulative clicks and impressions per arm go to
:func:`rankflow.canary.stats.decide_online` (mSPRT), which may stop the phase early. Users are
the unit of randomisation, so the CTR difference's variance is the delta method's over users
(:func:`rankflow.canary.stats.clustered_variance`), not the binomial one over impressions: with
heavy users the latter takes the arms' user mix for an effect. That rule is valid however often
it looks, so the number of looks only changes how soon it can stop.

Only clicks decide (what production sees). The true click probabilities of what each arm
showed (the expected CTR, free of sampling noise) are reported beside the decision, to say how
right it was (:mod:`rankflow.sim.truth`); they never enter it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.canary.phase import estimate_from_per_user, pre_period_from
from rankflow.canary.stats import AdjustedDifference, OnlineDecision, decide_online
from rankflow.registry.promotion import CHALLENGER, CHAMPION
from rankflow.serving.replay import ArmResult, Scorer, in_process
from rankflow.sim.oracle import Oracle
from rankflow.sim.replay import closed_loop
from rankflow.sim.truth import truth_report

if TYPE_CHECKING:
    from rankflow.canary.simulation import PhaseRequest
    from rankflow.config import OnlineGateConfig


@dataclass
class PhaseResult:
    """The online decision, the looks that led to it, and per-arm evidence."""

    decision: OnlineDecision
    looks: list[dict[str, float]]
    arms: dict[str, dict[str, Any]]
    day: date
    requests: int
    truth: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.decision.to_dict(),
            "looks": self.looks,
            "arms": self.arms,
            "day": str(self.day),
            "requests": self.requests,
            "truth": self.truth,
        }

    def summary(self) -> str:
        d = self.decision
        lines = [
            f"canary phase on {self.day} ({self.requests:,} requests, {len(self.looks)} looks): "
            f"{d.verdict}: {d.reason}"
        ]
        for arm in (CHAMPION, CHALLENGER):
            a = self.arms.get(arm)
            if a is None:
                continue
            lines.append(
                f"  {arm:<10} v{a['version']}: {a['impressions']:,} shown, {a['clicks']:,} "
                f"clicks, CTR {a['ctr']:.4f}, AUC {a['auc']:.4f}, logloss {a['logloss']:.4f}, "
                f"calibration {a['calibration_ratio']:.3f} (expected CTR {a['expected_ctr']:.4f})"
            )
        if self.truth:
            lines.append(f"  truth: {self.truth['verdict_was']}")
        return "\n".join(lines)


class _Recording:
    """Wraps a scorer and keeps each served item's arm, version and score (the score log)."""

    def __init__(self, score: Scorer) -> None:
        self.score = score
        self.rows: list[tuple[str, int, int, str, str, float]] = []

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.score(body)
        version, user = response["model"]["version"], int(body["user_id"])
        for item in response["items"]:
            self.rows.append(
                (
                    response["request_id"],
                    int(item["item_id"]),
                    user,
                    response["arm"],
                    version,
                    float(item["p_click"]),
                )
            )
        return response

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            self.rows,
            columns=["__request_id", "item_id", "user_id", "arm", "model_version", "p_click"],
        )


def _look_estimate(
    labels: list[pd.DataFrame], recording: _Recording, pre_period: pd.DataFrame | None
) -> AdjustedDifference:
    """The CTR difference so far and its variance, users as the randomisation unit, adjusted
    by the users' pre-period click rates when ``pre_period`` is given (CUPED)."""
    shown = pd.concat(labels, ignore_index=True)[["__request_id", "item_id", "label"]]
    rows = shown.merge(recording.frame(), on=["__request_id", "item_id"], how="inner")
    per_user = rows.groupby(["arm", "user_id"])["label"].agg(["sum", "count"]).reset_index()
    return estimate_from_per_user(per_user, pre_period)


def _merge(total: dict[str, ArmResult], part: dict[str, ArmResult]) -> None:
    for arm, result in part.items():
        into = total.setdefault(arm, ArmResult())
        into.requests += result.requests
        into.impressions += result.impressions
        into.clicks += result.clicks
        into.sum_p_true += result.sum_p_true
        into.sum_p_logged += result.sum_p_logged
        into.sum_p_oracle += result.sum_p_oracle
        into.sum_p_served += result.sum_p_served
        into.versions |= result.versions


def _counts(arms: dict[str, ArmResult]) -> tuple[int, int, int, int]:
    a, b = arms.get(CHAMPION, ArmResult()), arms.get(CHALLENGER, ArmResult())
    return a.clicks, a.impressions, b.clicks, b.impressions


def run_phase(
    score: Scorer,
    oracle: Oracle,
    traffic: pd.DataFrame,
    day: date,
    rule: OnlineGateConfig,
    *,
    looks: int,
    top_k: int | None,
    seed: int = 0,
    run_id: str = "canary",
    pre_period: pd.DataFrame | None = None,
) -> PhaseResult:
    """Send ``traffic`` (the simulator's requests for ``day``) in ``looks`` batches through
    ``score`` (a service that splits users between the two arms) and decide after each.

    ``pre_period``: per-user clicks and views before the phase (:func:`pre_period_from`); the
    rule then tests the CUPED-adjusted difference, which discounts the arms' user mix."""
    recording = _Recording(score)
    request_ids = traffic["request_id"].drop_duplicates().to_numpy()
    batches = [b for b in np.array_split(request_ids, max(1, looks)) if len(b)]
    arms: dict[str, ArmResult] = {}
    history: list[tuple[int, int, int, int]] = []
    estimates: list[AdjustedDifference] = []
    labels: list[pd.DataFrame] = []
    decision: OnlineDecision | None = None
    for i, batch in enumerate(batches):
        part = traffic[traffic["request_id"].isin(set(batch))]
        result, batch_labels = closed_loop(
            recording, oracle, part, day, top_k=top_k, seed=seed + i, run_id=f"{run_id}-{i}"
        )
        _merge(arms, result.arms)
        labels.append(batch_labels)
        history.append(_counts(arms))
        estimates.append(_look_estimate(labels, recording, pre_period))
        ca, va, cb, vb = (np.array(x) for x in zip(*history, strict=True))
        decision = decide_online(
            ca,
            va,
            cb,
            vb,
            alpha=rule.alpha,
            tau=rule.tau,
            min_views=rule.min_views,
            max_views=rule.max_views,
            variance=np.array([e.variance for e in estimates]),
            difference=np.array([e.difference for e in estimates]),
        )
        if decision.verdict != "continue":
            break
    assert decision is not None
    looked = [
        {
            "look": i + 1,
            "clicks_champion": c[0],
            "views_champion": c[1],
            "clicks_challenger": c[2],
            "views_challenger": c[3],
            "difference": e.difference,
            "variance": e.variance,
            "cuped_theta": e.theta,
            "variance_reduction": e.variance_reduction,
        }
        for i, (c, e) in enumerate(zip(history, estimates, strict=True))
    ]
    labelled = pd.concat(labels, ignore_index=True).merge(
        recording.frame(), on=["__request_id", "item_id"], how="inner"
    )
    per_arm = arm_evidence(arms, labelled)
    return PhaseResult(
        decision=decision,
        looks=looked,
        arms=per_arm,
        day=day,
        requests=sum(a.requests for a in arms.values()),
        truth=truth_report(decision, per_arm),
    )


def arm_evidence(arms: dict[str, ArmResult], labelled: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per arm: traffic, clicks, online CTR, AUC, log loss and calibration of what it showed,
    and (for the report only) the expected CTR from the truth."""
    from models import metrics as m

    out: dict[str, dict[str, Any]] = {}
    for arm, result in arms.items():
        rows = labelled[labelled["arm"] == arm]
        y = rows["label"].to_numpy(np.float64)
        p = rows["p_click"].to_numpy(np.float64)
        both = 0 < y.sum() < len(y)
        out[arm] = {
            "version": ",".join(sorted(result.versions)),
            "requests": result.requests,
            "impressions": result.impressions,
            "clicks": result.clicks,
            "ctr": result.ctr,
            "mean_predicted": float(p.mean()) if len(p) else float("nan"),
            "auc": m.auc(y, p) if both else float("nan"),
            "logloss": m.logloss(y, p) if both else float("nan"),
            "calibration_ratio": float(p.mean() / y.mean()) if y.sum() > 0 else float("nan"),
            "expected_ctr": result.mean(result.sum_p_true),
            "expected_ctr_oracle_order": result.mean(result.sum_p_oracle),
        }
    return out


def simulated_phase(request: PhaseRequest) -> PhaseResult:
    """The canary phase on the simulator's next day (a
    :class:`rankflow.canary.simulation.SimulatedPhase`): both versions served pinned, in
    process, users split by ``canary.share``; the fresh window's clicks and views per user are
    the pre-period of the CUPED adjustment."""
    from rankflow.serving.service import ScoringService

    config, cc = request.config, request.config.canary
    oracle = Oracle.from_truth_dir(request.settings.paths.truth)
    traffic = oracle.day_traffic(None, cc.traffic_impressions)
    phase_config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"canary_share": cc.share})}
    )
    pre_period = None
    if cc.online.variance_reduction == "cuped":
        window = request.window
        pre_period = pre_period_from([window.train, window.valid, window.test])
    pinned = {CHAMPION: request.champion, CHALLENGER: request.challenger}
    service = ScoringService(request.settings, phase_config, pinned=pinned)
    service.start(poll=False)
    try:
        return run_phase(
            in_process(service),
            oracle,
            traffic.frame,
            traffic.day,
            cc.online,
            looks=cc.looks,
            top_k=cc.top_k,
            seed=cc.seed,
            run_id=f"canary-{request.run_id[:8]}",
            pre_period=pre_period,
        )
    finally:
        service.close()
