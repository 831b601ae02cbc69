"""The gap checks' statistics as pure functions over arrays (no I/O, no Feast, no MLflow).

- :func:`compare_values`: served vs recomputed values of one feature (mismatch rate, largest
  difference; a null on one side only is a mismatch); :func:`compare_scores`: logged vs offline
  scores (the rows beyond a tolerance, how many, which);
- :func:`psi` and :func:`ks`: drift of one feature between two windows (PSI over quantile bins
  of the reference, nulls as their own bin; KS from scipy);
- :func:`adversarial_validation`: can a classifier tell old rows from new ones? Cross-validated
  AUC of a gradient-boosted classifier against the same with shuffled labels (the permutation
  baseline), and the features whose permutation costs the most AUC (what moved);
- :func:`grade`: a number against a warn / fail threshold.

Hand-written with numpy, scipy and scikit-learn (already in the lock): the drift packages that
resolve with the lock either lack PSI or a tabular domain classifier (docs in STACK-NOTES).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

Verdict = Literal["pass", "warn", "fail"]
ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}


def grade(value: float | None, warn: float, fail: float) -> Verdict:
    """``pass`` below ``warn``, ``warn`` from it, ``fail`` from ``fail``; NaN/None fail loudly
    only if nothing could be measured is a problem, so they are ``warn``."""
    if value is None or not math.isfinite(value):
        return "warn"
    if value >= fail:
        return "fail"
    return "warn" if value >= warn else "pass"


def worst(verdicts: list[Verdict] | list[str]) -> Verdict:
    return max(verdicts, key=lambda v: ORDER[v], default="pass")  # type: ignore[return-value]


def _is_null(values: np.ndarray) -> np.ndarray:
    return pd.isna(pd.Series(values, dtype=object)).to_numpy()


@dataclass(frozen=True)
class ValueComparison:
    rows: int
    mismatches: int
    max_abs_diff: float  # numeric features only; NaN for strings
    example: str | None  # one mismatching pair, for the report
    examples: list[int] = field(default_factory=list)  # positions of the first mismatches

    @property
    def rate(self) -> float:
        return self.mismatches / self.rows if self.rows else 0.0


def compare_values(
    served: ArrayLike, offline: ArrayLike, tolerance: float = 1e-6
) -> ValueComparison:
    """Row-wise comparison; numbers match within ``tolerance`` relative (absolute near 0)."""
    a = np.asarray(served, dtype=object)
    b = np.asarray(offline, dtype=object)
    null_a, null_b = _is_null(a), _is_null(b)
    mismatch = null_a != null_b
    both = ~null_a & ~null_b
    max_diff = float("nan")
    numeric = all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        for v in np.concatenate([a[both][:50], b[both][:50]])
    )
    if both.any() and numeric:
        x = a[both].astype(np.float64)
        y = b[both].astype(np.float64)
        diff = np.abs(x - y)
        max_diff = float(diff.max())
        mismatch[both] = diff > tolerance * np.maximum(1.0, np.abs(y))
    elif both.any():
        mismatch[both] = a[both].astype(str) != b[both].astype(str)
    example = None
    positions = [int(i) for i in np.flatnonzero(mismatch)[:3]]
    if positions:
        example = f"served {a[positions[0]]!r} vs offline {b[positions[0]]!r}"
    return ValueComparison(len(a), int(mismatch.sum()), max_diff, example, positions)


@dataclass(frozen=True)
class ScoreComparison:
    rows: int
    beyond: int  # rows whose logged and offline scores differ by more than the tolerance
    max_abs_diff: float
    worst: list[int]  # positions of the largest differences beyond the tolerance, largest first

    @property
    def rate(self) -> float:
        return self.beyond / self.rows if self.rows else 0.0


def compare_scores(
    logged: ArrayLike, offline: ArrayLike, tolerance: float, examples: int = 5
) -> ScoreComparison:
    """Which rows' scores differ by more than ``tolerance`` (absolute P(click)); a score that is
    not a number on one side only differs. A rate, not the largest difference, is what a
    verdict should read: one odd request must not condemn a day of traffic."""
    a = np.asarray(logged, dtype=np.float64)
    b = np.asarray(offline, dtype=np.float64)
    diff = np.abs(a - b)
    diff = np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(diff), np.inf, diff))
    beyond = diff > tolerance
    order = np.argsort(-diff, kind="stable")
    worst = [int(i) for i in order[: min(examples, int(beyond.sum()))]]
    largest = float(diff.max()) if diff.size else float("nan")
    return ScoreComparison(len(a), int(beyond.sum()), largest, worst)


def psi(reference: ArrayLike, current: ArrayLike, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``current`` against ``reference``.

    Numeric: quantile bins of the reference (so each holds ~1/bins of it); categorical: one bin
    per value. Nulls are one more bin either way. Empty bins get ``eps`` mass.
    """
    ref = pd.Series(reference)
    cur = pd.Series(current)
    if pd.api.types.is_numeric_dtype(ref) and pd.api.types.is_numeric_dtype(cur):
        values = ref.dropna().to_numpy(np.float64)
        if values.size == 0:
            edges = np.array([-np.inf, np.inf])
        else:
            edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
            edges[0], edges[-1] = -np.inf, np.inf
            if edges.size < 2:
                edges = np.array([-np.inf, np.inf])
        ref_bins = _numeric_bins(ref, edges)
        cur_bins = _numeric_bins(cur, edges)
    else:
        ref_bins = ref.astype(object).where(ref.notna(), "\x00null").astype(str)
        cur_bins = cur.astype(object).where(cur.notna(), "\x00null").astype(str)
    keys = sorted(set(ref_bins) | set(cur_bins))
    p = pd.Series(ref_bins).value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy()
    q = pd.Series(cur_bins).value_counts(normalize=True).reindex(keys, fill_value=0).to_numpy()
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_bins(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    x = values.to_numpy(np.float64, na_value=np.nan)
    out = np.searchsorted(edges[1:-1], x, side="right").astype(object)
    out[np.isnan(x)] = "null"
    return out.astype(str)


def ks(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov (statistic, p-value) over the non-null numbers."""
    from scipy.stats import ks_2samp

    a = pd.to_numeric(pd.Series(reference), errors="coerce").dropna().to_numpy()
    b = pd.to_numeric(pd.Series(current), errors="coerce").dropna().to_numpy()
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class Adversarial:
    auc: float
    baseline_auc: float  # the same, labels shuffled
    top_features: list[tuple[str, float]]  # (feature, AUC lost when it is permuted)

    @property
    def lift(self) -> float:
        return self.auc - self.baseline_auc


def _encode(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            out[name] = column.astype(np.float64)
        else:
            out[name] = column.astype("category")
    return out


def adversarial_validation(
    old: pd.DataFrame, new: pd.DataFrame, *, seed: int = 0, folds: int = 3, top: int = 5
) -> Adversarial:
    """Old-vs-new classifier (see the module docstring); equal-size samples of both.

    Runs with one OpenMP thread: on a shared 2-core machine the default (one per core, in
    every fit of the cross-validation) was ~30x slower under load.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _adversarial(old, new, seed=seed, folds=folds, top=top)


def _adversarial(old: pd.DataFrame, new: pd.DataFrame, *, seed: int, folds: int, top: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n = min(len(old), len(new))
    if n < 2 * folds:
        return Adversarial(float("nan"), float("nan"), [])
    rng = np.random.default_rng(seed)
    columns = list(old.columns)
    both = pd.concat(
        [old.sample(n, random_state=seed), new[columns].sample(n, random_state=seed + 1)],
        ignore_index=True,
    )
    X = _encode(both)
    y = np.r_[np.zeros(n), np.ones(n)]
    categorical = [not pd.api.types.is_numeric_dtype(X[c]) for c in X.columns]

    def model() -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, categorical_features=categorical, random_state=seed
        )

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(model(), X, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, p))
    shuffled = rng.permutation(y)
    p0 = cross_val_predict(model(), X, shuffled, cv=cv, method="predict_proba")[:, 1]
    baseline = float(roc_auc_score(shuffled, p0))
    # What moved: fit on two thirds, permutation importance (AUC lost) on the rest.
    order = rng.permutation(len(y))
    cut = len(y) * 2 // 3
    fitted = model().fit(X.iloc[order[:cut]], y[order[:cut]])
    importance = permutation_importance(
        fitted,
        X.iloc[order[cut:]],
        y[order[cut:]],
        scoring="roc_auc",
        n_repeats=3,
        random_state=seed,
    )
    ranked = sorted(zip(X.columns, importance.importances_mean, strict=True), key=lambda kv: -kv[1])
    return Adversarial(auc, baseline, [(str(k), float(v)) for k, v in ranked[:top]])


def calibration_error(y: ArrayLike, p: ArrayLike) -> float:
    """|mean prediction / observed rate - 1| (NaN without positives)."""
    y = np.asarray(y, dtype=np.float64)
    rate = float(y.mean()) if y.size else float("nan")
    if not rate > 0:
        return float("nan")
    return abs(float(np.mean(p)) / rate - 1.0)
