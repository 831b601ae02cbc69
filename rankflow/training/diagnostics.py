"""Warnings where the data and the config disagree, as pure functions.

Each check takes plain values or frames and returns ``DataWarning`` objects; the train step
prints them in its run summary and logs them to MLflow. None of them stops a run: they point
at a setting that silently does the wrong thing on this data, e.g. a smoothed-CTR prior of
0.045 on data with a 55% positive rate, a feature that is one constant in train (it is
standardised to zeros and teaches the model nothing), or a per-segment AUC of 1.000 that comes
from a handful of rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from models.config import ModelConfig
    from rankflow.config import TrackingConfig
    from rankflow.features.training_set import TrainingSet

# Defaults, overridable per call; chosen so that none fires on the simulator's default data.
PRIOR_RATIO_LIMIT = 2.0  # observed positive rate more than 2x off the prior (either side)
NULL_SHARE_LIMIT = 0.99  # a train feature null in more than 99% of rows
MIN_SEGMENT_ROWS = 1000  # a segment AUC on fewer test rows is reported as unreliable


@dataclass(frozen=True)
class DataWarning:
    """One disagreement: ``check`` names the rule, ``subject`` the key / column / segment."""

    check: str
    subject: str
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.subject}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def positive_rate_vs_prior(
    labels: Iterable[float] | np.ndarray,
    ctr_prior: float,
    *,
    ratio_limit: float = PRIOR_RATIO_LIMIT,
    subject: str = "warehouse.ctr_prior",
) -> list[DataWarning]:
    """The smoothed CTR features shrink towards ``ctr_prior``; if the observed positive rate is
    more than ``ratio_limit`` times off (either way), every smoothed CTR is biased."""
    y = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=float)
    if y.size == 0 or ctr_prior <= 0:
        return []
    rate = float(y.mean())
    ratio = rate / ctr_prior if rate > 0 else math.inf
    if 1 / ratio_limit <= ratio <= ratio_limit:
        return []
    return [
        DataWarning(
            "positive_rate_vs_prior",
            subject,
            f"the train positive rate is {rate:.4f} ({int(y.sum()):,} of {y.size:,} rows) but "
            f"the prior is {ctr_prior:g} ({ratio:.2f}x): smoothed CTR features are pulled "
            f"towards the wrong value; set {subject} near {rate:.3g}",
        )
    ]


def uninformative_features(
    train: pd.DataFrame,
    columns: Iterable[str],
    *,
    null_share_limit: float = NULL_SHARE_LIMIT,
) -> list[DataWarning]:
    """Train features that are constant (one distinct non-null value) or almost always null:
    the spec standardises them to a constant, so they cost parameters and teach nothing."""
    out: list[DataWarning] = []
    n = len(train)
    if n == 0:
        return out
    for name in columns:
        if name not in train.columns:
            continue
        column = train[name]
        nulls = int(column.isna().sum())
        if nulls / n > null_share_limit:
            out.append(
                DataWarning(
                    "mostly_null_feature",
                    name,
                    f"null in {nulls:,} of {n:,} train rows ({nulls / n:.1%}); it only encodes "
                    "'missing'",
                )
            )
            continue
        distinct = column.dropna().unique()
        if len(distinct) <= 1:
            value = distinct[0] if len(distinct) else None
            out.append(
                DataWarning(
                    "constant_feature",
                    name,
                    f"one value ({value!r}) in all {n - nulls:,} non-null train rows; "
                    "drop it from the model config or check the data",
                )
            )
    return out


def small_segments(
    segments: pd.Series,
    labels: pd.Series | np.ndarray,
    *,
    min_rows: int = MIN_SEGMENT_ROWS,
    column: str | None = None,
) -> list[DataWarning]:
    """Segment values with fewer than ``min_rows`` rows (or one class only): their AUC is noise
    (a segment of a few rows shows 1.000). The warning prints rows and positives."""
    name = column or str(segments.name)
    frame = pd.DataFrame({"segment": segments.to_numpy(), "label": np.asarray(labels, float)})
    counts = frame.groupby("segment", dropna=False)["label"].agg(["size", "sum"])
    out = []
    for value, row in counts.iterrows():
        rows, positives = int(row["size"]), int(row["sum"])
        if rows >= min_rows and 0 < positives < rows:
            continue
        out.append(
            DataWarning(
                "small_segment",
                f"{name}={value}",
                f"AUC on {rows:,} rows with {positives:,} positives (< {min_rows:,} rows or one "
                "class): not a reliable figure",
            )
        )
    return out


def segment_counts(segments: pd.Series, labels: pd.Series | np.ndarray) -> dict[str, int]:
    """Rows and positives per segment value, as flat metric names (``n_by_<col>/<value>``,
    ``positives_by_<col>/<value>``) to log next to ``auc_by_<col>/<value>``."""
    frame = pd.DataFrame({"segment": segments.to_numpy(), "label": np.asarray(labels, float)})
    counts = frame.groupby("segment", dropna=False)["label"].agg(["size", "sum"])
    out: dict[str, int] = {}
    for value, row in counts.iterrows():
        out[f"n_by_{segments.name}/{value}"] = int(row["size"])
        out[f"positives_by_{segments.name}/{value}"] = int(row["sum"])
    return out


def render(warnings: list[DataWarning]) -> str:
    """The run summary's block: one line per warning, or nothing."""
    if not warnings:
        return ""
    return "\n".join(
        [f"  {len(warnings)} data/config warning(s):"] + [f"    {w}" for w in warnings]
    )


def to_json(warnings: list[DataWarning]) -> list[dict[str, Any]]:
    return [w.to_dict() for w in warnings]


# --------------------------------------------------------------------------------------------
# What the train step checks (inputs only, no I/O)


def step_warnings(
    ctr_prior: float, tracking: TrackingConfig, model_config: ModelConfig, training_set: TrainingSet
) -> list[DataWarning]:
    """The train step's checks: the train positive rate against ``warehouse.ctr_prior``,
    declared model features that are constant or almost always null in train, and the test
    segments (``tracking.segment_columns``) too small for their AUC."""
    train, test = training_set.train, training_set.test
    label = model_config.features.label
    found: list[DataWarning] = []
    if label in train.columns and len(train):
        found += positive_rate_vs_prior(train[label].to_numpy(dtype=float), ctr_prior)
    features = [*model_config.features.categorical, *model_config.features.numeric]
    found += uninformative_features(train, features)
    for column in tracking.segment_columns:
        if column in test.columns and label in test.columns:
            found += small_segments(test[column], test[label], min_rows=tracking.min_segment_rows)
    return found


def step_segment_counts(
    segment_columns: list[str], test: pd.DataFrame, label: str
) -> dict[str, float]:
    """Rows and positives behind every ``auc_by_<col>/<value>`` the step logs."""
    out: dict[str, float] = {}
    for column in segment_columns:
        if column in test.columns and label in test.columns:
            counts = segment_counts(test[column], test[label])
            out.update({k: float(v) for k, v in counts.items()})
    return out
