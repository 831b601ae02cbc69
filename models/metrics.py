"""Offline metrics for CTR models: AUC, logloss, normalised entropy, calibration, oracle gap.

- NE (normalised entropy, He et al. 2014): logloss / entropy of the observed base rate; 1.0 is
  no better than predicting the average CTR.
- ECE with equal-mass bins: CTR predictions crowd near zero, so equal-width bins would put
  nearly every row in the first bin and hide miscalibration.
- calibration_ratio = mean prediction / observed CTR (1.0 is calibrated on average).
- With simulated data the true click probabilities give the ceiling: ``oracle_*`` metrics, and
  ``gap_closed_*`` = share of the (oracle - baseline) gap the model closes (1.0 = oracle,
  0.0 = baseline). The baseline is the given baseline predictions, else the constant base
  rate (logloss = entropy, AUC = 0.5).

Light to import (numpy and pandas only): the simulator's oracle figures use ``auc`` and
``logloss`` too, and it must not pay for torch. sklearn is imported by ``auc`` on first use;
torch is never imported here: a torch model or tensor handed to ``evaluate`` means the caller
has imported it already.

``EPS`` (1e-7) clips probabilities for the log loss, for models and the oracle alike: about the
float32 resolution of a sigmoid output next to 1.0, so a saturated model output is not
charged an arbitrary ``-log(1e-12)``. The simulator's true click probabilities stay far inside
(2.3e-4 .. 0.85 in the default simulation), so the clip leaves the oracle figures as they were.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # models.spec imports torch: this module stays light (see its docstring)
    from models.spec import FeatureSpec

EPS = 1e-7


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    y = np.asarray(y)
    if y.size == 0 or np.all(y == y[0]):
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = _clip(p)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def entropy(rate: float) -> float:
    r = float(np.clip(rate, EPS, 1 - EPS))
    return float(-(r * np.log(r) + (1 - r) * np.log(1 - r)))


def normalized_entropy(y: np.ndarray, p: np.ndarray) -> float:
    return logloss(y, p) / entropy(float(np.mean(y)))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """sum_b |b|/N * |mean(p_b) - mean(y_b)| over ``n_bins`` equal-mass bins of sorted p."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for chunk in np.array_split(order, min(n_bins, y.size)):
        total += chunk.size * abs(p[chunk].mean() - y[chunk].mean())
    return float(total / y.size)


def calibration_ratio(y: np.ndarray, p: np.ndarray) -> float:
    observed = float(np.mean(y))
    return float(np.mean(p)) / observed if observed > 0 else float("nan")


def segment_auc(y: np.ndarray, p: np.ndarray, segments: pd.Series) -> dict[str, float]:
    """AUC per segment value (NaN for a segment with a single class); nulls are '<null>'."""
    keys = segments.astype(object).where(segments.notna(), "<null>").astype(str).to_numpy()
    return {value: auc(y[keys == value], p[keys == value]) for value in sorted(np.unique(keys))}


def _metric_name(text: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces.
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


def _probabilities(
    model_or_probs: Any, df: pd.DataFrame, spec: FeatureSpec | None, batch_size: int
) -> np.ndarray:
    # A torch model or tensor can only exist once torch is imported: never import it for arrays.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model_or_probs, torch.nn.Module):
        if spec is None:
            raise ValueError("evaluate: a torch model needs the FeatureSpec to build its inputs")
        from models.networks import predict_logits

        logits = predict_logits(model_or_probs, spec.transform(df), batch_size)
        return torch.sigmoid(logits).double().numpy()
    if hasattr(model_or_probs, "predict_proba"):
        return np.asarray(model_or_probs.predict_proba(df), dtype=np.float64)
    probs = model_or_probs
    if torch is not None and isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    return np.asarray(probs, dtype=np.float64).reshape(-1)


def _truth_for(df: pd.DataFrame, truth: pd.Series) -> np.ndarray:
    if "event_id" not in df.columns:
        raise ValueError("evaluate: truth is joined by event_id, but the frame has no event_id")
    joined = truth.reindex(df["event_id"].to_numpy())
    missing = int(joined.isna().sum())
    if missing:
        examples = df["event_id"][joined.isna().to_numpy()].head(3).tolist()
        raise ValueError(
            f"evaluate: {missing} of {len(df)} event_ids have no true p_click "
            f"(e.g. {examples}); truth must be a Series of p_click indexed by event_id"
        )
    return joined.to_numpy(dtype=np.float64)


def evaluate(
    model_or_probs: Any,
    df: pd.DataFrame,
    spec: FeatureSpec | None = None,
    *,
    truth: pd.Series | None = None,
    segment_col: str | None = None,
    baseline: np.ndarray | None = None,
    label_col: str | None = None,
    batch_size: int = 16384,
) -> dict[str, float]:
    """Metrics of predictions on ``df`` (which holds the label).

    ``model_or_probs``: a torch model (needs ``spec``), anything with ``predict_proba(df)``
    (``Scorer``, ``LogisticBaseline``), or an array of probabilities aligned with ``df``.
    ``truth``: true p_click as a Series indexed by event_id (simulated data only).
    ``segment_col``: also AUC per value of that column (``auc_by_<col>/<value>``).
    ``baseline``: baseline probabilities aligned with ``df``, for ``gap_closed_*``.
    """
    label_col = label_col or (spec.label if spec is not None else "label")
    if label_col not in df.columns:
        raise ValueError(f"evaluate: the frame has no label column {label_col!r}")
    y = df[label_col].to_numpy(dtype=np.float64)
    p = _probabilities(model_or_probs, df, spec, batch_size)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"evaluate: {p.shape[0]} predictions for {y.shape[0]} rows")
    out: dict[str, float] = {
        "n": float(y.size),
        "auc": auc(y, p),
        "logloss": logloss(y, p),
        "ne": normalized_entropy(y, p),
        "ece": expected_calibration_error(y, p),
        "calibration_ratio": calibration_ratio(y, p),
        "ctr_observed": float(np.mean(y)),
        "ctr_predicted": float(np.mean(p)),
    }
    if segment_col is not None:
        if segment_col not in df.columns:
            raise ValueError(f"evaluate: the frame has no segment column {segment_col!r}")
        per_segment = segment_auc(y, p, df[segment_col])
        for value, score in per_segment.items():
            out[_metric_name(f"auc_by_{segment_col}/{value}")] = score
        weights = df[segment_col].astype(object).fillna("<null>").astype(str).value_counts()
        valid = {k: v for k, v in per_segment.items() if not np.isnan(v)}
        if valid:
            w = np.array([weights[k] for k in valid], dtype=np.float64)
            out[f"auc_by_{segment_col}/weighted_mean"] = float(
                np.dot(w, list(valid.values())) / w.sum()
            )
    if baseline is not None:
        b = np.asarray(baseline, dtype=np.float64).reshape(-1)
        out["baseline_auc"] = auc(y, b)
        out["baseline_logloss"] = logloss(y, b)
    if truth is not None:
        t = _truth_for(df, truth)
        out["oracle_auc"] = auc(y, t)
        out["oracle_logloss"] = logloss(y, t)
        out["oracle_ne"] = normalized_entropy(y, t)
        base_auc = out.get("baseline_auc", 0.5)
        base_ll = out.get("baseline_logloss", entropy(float(np.mean(y))))
        out["gap_closed_auc"] = _share(out["auc"], base_auc, out["oracle_auc"])
        out["gap_closed_logloss"] = _share(out["logloss"], base_ll, out["oracle_logloss"])
    return out


def _share(model: float, baseline: float, oracle: float) -> float:
    gap = oracle - baseline
    return float((model - baseline) / gap) if abs(gap) > 1e-12 else float("nan")
