"""Traffic with a known truth through the scoring service (``rankflow replay``).

Two modes, both over the simulator's next day (the day after the data ends, the day the online
store's features are for) unless a day is given:

- **log replay** (``mode="log"``): each simulated request is sent as it happened
  (:func:`rankflow.serving.replay.log_replay`); afterwards its labels (the simulator's clicks)
  are written beside the served log for the metric gap. With ``source: raw`` and a ``day``, a
  held-out day of the user's own impressions is replayed the same way (labels from the data).
- **closed loop** (``mode="closed"``): the simulator offers each request's items as candidates,
  the service ranks them, the top ``k`` are shown at their ranked positions, and clicks are
  drawn from the truth for what was shown. Each arm gets an online CTR and an *expected* CTR
  (the mean true probability of what it showed: no sampling noise), next to the same request's
  expected CTR under the logged (random) order and under the oracle's own ranking.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankflow.serving.labels import write_labels
from rankflow.serving.replay import (
    ArmResult,
    HttpScorer,
    ReplayError,
    ReplayLabels,
    ReplayResult,
    Scorer,
    in_process,
    log_replay,
    raw_day_traffic,
    replay_result,
    request_body,
    start_service,
    traffic_requests,
)
from rankflow.sim.oracle import Oracle

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.serving.service import ScoringService
    from rankflow.settings import Settings


def closed_loop(
    score: Scorer,
    oracle: Oracle,
    frame: pd.DataFrame,
    day: date,
    *,
    top_k: int | None = None,
    seed: int = 0,
    max_requests: int | None = None,
    progress: bool = False,
    run_id: str | None = None,
) -> tuple[ReplayResult, pd.DataFrame]:
    """Rank the simulator's candidates with the service, show the top ``k`` at their ranks, draw
    clicks from the truth; per-arm online and expected CTRs (see the module docstring)."""
    rng = np.random.default_rng([seed, 1])
    run_id = run_id or uuid.uuid4().hex[:8]
    arms: dict[str, ArmResult] = {}
    labels = ReplayLabels("closed")
    for group in traffic_requests(frame, max_requests, progress, "closed loop"):
        request_id = f"{run_id}-{group.first('request_id')}"
        response = score(request_body(group, request_id, with_positions=False))
        ranked = response["items"][: top_k or len(response["items"])]
        shown = np.array([item["item_id"] for item in ranked], dtype=np.int64)
        positions = np.arange(1, len(shown) + 1)
        when = pd.Timestamp(group.first("event_timestamp")).to_pydatetime()
        user, device = int(group.first("user_id")), str(group.first("device"))
        # One truth call for what was shown (at its ranks) and for every candidate at the top,
        # which gives the truth's own best order of the same candidates.
        candidates = group["item_id"].astype(np.int64)
        both = _truth(
            oracle,
            user,
            np.r_[shown, candidates],
            np.r_[positions, np.ones(len(candidates), np.int64)],
            device,
            when,
        )
        p_true, at_top = both[: len(shown)], both[len(shown) :]
        clicked = (rng.random(len(shown)) < p_true).astype(np.int32)
        best = candidates[np.argsort(-at_top, kind="stable")][: len(shown)]
        arm = arms.setdefault(response["arm"], ArmResult())
        arm.requests += 1
        arm.impressions += len(shown)
        arm.clicks += int(clicked.sum())
        arm.sum_p_true += float(p_true.sum())
        arm.sum_p_logged += float(group["p_click"][: len(shown)].astype(np.float64).sum())
        arm.sum_p_oracle += float(_truth(oracle, user, best, positions, device, when).sum())
        arm.sum_p_served += float(sum(item["p_click"] for item in ranked))
        arm.versions.add(response["model"]["version"])
        labels.add(request_id, shown, positions, clicked, p_true)
    return replay_result("closed", day, arms, labels)


def _truth(
    oracle: Oracle,
    user: int,
    items: np.ndarray,
    positions: np.ndarray,
    device: str,
    when: datetime,
) -> np.ndarray:
    n = len(items)
    devices = np.array([device] * n, dtype=object)
    return oracle.p_click(np.full(n, user), items, positions, devices, when)


def run_replay(
    settings: Settings,
    config: RankflowConfig,
    *,
    mode: str,
    url: str | None = None,
    day: date | None = None,
    impressions: int | None = None,
    max_requests: int | None = None,
    top_k: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ReplayResult:
    """``rankflow replay``: build the day's traffic, send it (HTTP if ``url``, else in process),
    write the labels beside the served log, and return the per-arm result."""
    if mode not in ("log", "closed"):
        raise ReplayError(f"replay mode {mode!r}: expected 'log' or 'closed'")
    paths = settings.paths
    oracle = None
    if mode == "closed" or config.source == "simulate" or day is None:
        oracle = Oracle.from_truth_dir(paths.truth)
        traffic = oracle.day_traffic(day, impressions)
        frame, day = traffic.frame, traffic.day
    else:
        frame = raw_day_traffic(config.resolved_raw_dir(paths), day)
    service: ScoringService | None = None
    if url:
        score: Scorer = HttpScorer(url)
    else:
        service = start_service(settings, config)
        score = in_process(service)
    run_id = uuid.uuid4().hex[:8]
    try:
        if mode == "log":
            result, labels = log_replay(
                score, frame, day, max_requests=max_requests, progress=progress, run_id=run_id
            )
        else:
            assert oracle is not None
            result, labels = closed_loop(
                score,
                oracle,
                frame,
                day,
                top_k=top_k,
                seed=seed,
                max_requests=max_requests,
                progress=progress,
                run_id=run_id,
            )
    finally:
        if service is not None:
            service.close()  # flushes the served-feature log
        elif isinstance(score, HttpScorer):
            score.close()
    if len(labels):
        name = f"{day:%Y%m%d}-{mode}-{run_id}"
        result.labels_file = write_labels(paths, config.serving.feature_service, labels, name)
    return result
