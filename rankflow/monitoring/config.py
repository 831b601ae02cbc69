"""``monitoring:`` in configs/rankflow.yaml: the gap checks' thresholds (warn / fail).

Each check passes below ``warn``, warns from ``warn`` and fails from ``fail`` (for AUC-like
"higher is worse" quantities the same; every threshold is on a number the report prints). How
the drift thresholds were calibrated: docs/operations.md ("Gap-check thresholds").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What the drift check compares the served rows with (rankflow/monitoring/drift.py).
ReferenceMode = Literal["days_before_served", "training_window"]


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn: float = Field(..., ge=0)
    fail: float = Field(..., ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) must be <= fail ({self.fail})")
        return self


def _t(warn: float, fail: float):
    return Field(default_factory=lambda: Threshold(warn=warn, fail=fail))


class MonitoringConfig(BaseModel):
    """Thresholds and sizes of ``rankflow gap-check``."""

    model_config = ConfigDict(extra="forbid")

    feature_tolerance: float = Field(
        1e-6, ge=0, description="Relative difference above which a served value is a mismatch"
    )
    feature_mismatch_rate: Threshold = _t(0.001, 0.01)
    score_tolerance: float = Field(
        1e-4, ge=0, description="|logged - offline| P(click) above which a row's score differs"
    )
    # Share of a version's rows whose score differs: one odd request must not fail the day.
    score_mismatch_rate: Threshold = _t(0.001, 0.01)
    # Drift, calibrated on 20 simulated drift-free days (bench/bench_drift_false_alarms.py,
    # docs/operations.md): warn from the largest value those days showed, fail from 1.5 times
    # it, each rounded up to a multiple of 0.05. Day-to-day variation, not sampling noise, sets
    # them; the drift check never goes below the statistics' null quantiles either.
    psi: Threshold = _t(0.2, 0.3)
    ks: Threshold = _t(0.15, 0.2)
    adversarial_auc_lift: Threshold = _t(0.15, 0.25)  # AUC on held-out entities minus 0.5
    auc_drop: Threshold = _t(0.02, 0.05)  # offline test AUC minus online AUC
    logloss_rise: Threshold = _t(0.01, 0.03)
    calibration_error: Threshold = _t(0.1, 0.25)  # |mean p / observed CTR - 1|
    freshness_hours: Threshold = _t(30.0, 54.0)  # age of the newest online value per view
    min_labelled_rows: int = Field(
        500, ge=1, description="Fewer labelled served rows: the metric gap is not judged"
    )
    max_rows: int = Field(
        50_000, ge=100, description="Served rows sampled for skew and drift (seeded)"
    )
    drift_rows: int = Field(
        5_000, ge=100, description="Rows of each window the drift checks compare (seeded sample)"
    )
    drift_reference: ReferenceMode = Field(
        "days_before_served",
        description="What drift compares the served rows with: the days just before the served "
        "day, or the last days of the champion's training window",
    )
    drift_reference_days: int = Field(
        7,
        ge=1,
        description="Days of the drift reference: features at maturity, as one served day has them",
    )
    drift_false_alarm_rate: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Declared rate at which sampling noise alone may fail the drift check; no "
        "drift threshold is below the statistics' null quantile at this rate (Bonferroni)",
    )
    drift_exclude: list[str] = Field(
        default_factory=lambda: ["position", "log_position"],
        description="Features left out of drift: the service scores at a fixed position",
    )
    seed: int = 0
