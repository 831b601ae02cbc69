"""The canary's offline gate: champion and challenger scored on the same fresh holdout.

A pure function of the holdout's labels, the two models' predictions, the latest gap-check
verdicts and the config; it returns every number it used, so the decision can be written on the
registry versions as it was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.metrics import calibration_ratio, expected_calibration_error
from rankflow.canary.stats import Interval, non_inferior, paired_bootstrap
from rankflow.config import OfflineGateConfig


@dataclass(frozen=True)
class OfflineGateResult:
    """Whether the challenger may go to the canary phase, and the evidence."""

    passed: bool
    reasons: list[str]
    intervals: dict[str, Interval]
    calibration: dict[str, float]
    rows: int
    blocked_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "calibration": dict(self.calibration),
            "rows": self.rows,
            "blocked_by": list(self.blocked_by),
        }

    def summary(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"offline gate {verdict} on {self.rows} rows: " + "; ".join(self.reasons)


def offline_gate(
    labels: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    config: OfflineGateConfig,
    *,
    gap_verdicts: dict[str, str] | None = None,
    seed: int = 0,
) -> OfflineGateResult:
    """Non-inferiority of AUC and log loss (paired bootstrap), a calibration guardrail, and no
    blocking gap check failing (``gap_verdicts``: check name -> pass / warn / fail)."""
    labels = np.asarray(labels, dtype=np.float64)
    intervals = paired_bootstrap(
        labels,
        champion,
        challenger,
        resamples=config.bootstrap_resamples,
        level=config.confidence,
        seed=seed,
    )
    reasons: list[str] = []
    ok = True
    for metric, margin in (("auc", config.auc_margin), ("logloss", config.logloss_margin)):
        interval = intervals[metric]
        passed = non_inferior(interval, margin)
        ok &= passed
        side = "low" if metric == "auc" else "high"
        bound = interval.low if metric == "auc" else interval.high
        reasons.append(
            f"{metric} difference {interval.difference:+.4f} "
            f"[{interval.low:+.4f}, {interval.high:+.4f}] ({side} end {bound:+.4f} vs margin "
            f"{'-' if metric == 'auc' else '+'}{margin}): {'ok' if passed else 'inferior'}"
        )
    calibration = {
        "ece_champion": expected_calibration_error(labels, champion),
        "ece_challenger": expected_calibration_error(labels, challenger),
        "calibration_ratio_champion": calibration_ratio(labels, champion),
        "calibration_ratio_challenger": calibration_ratio(labels, challenger),
    }
    increase = calibration["ece_challenger"] - calibration["ece_champion"]
    calibrated = bool(increase <= config.max_ece_increase)
    ok &= calibrated
    reasons.append(
        f"ECE {calibration['ece_challenger']:.4f} vs champion {calibration['ece_champion']:.4f} "
        f"(at most +{config.max_ece_increase}): {'ok' if calibrated else 'worse calibrated'}"
    )
    blocked = sorted(
        name
        for name, verdict in (gap_verdicts or {}).items()
        if verdict == "fail" and name in config.blocking_gap_checks
    )
    if blocked:
        ok = False
        reasons.append(f"latest gap check failed on {', '.join(blocked)} (data, not drift)")
    return OfflineGateResult(
        passed=bool(ok),
        reasons=reasons,
        intervals=intervals,
        calibration=calibration,
        rows=int(labels.size),
        blocked_by=blocked,
    )
