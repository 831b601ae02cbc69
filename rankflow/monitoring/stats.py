"""The gap checks' statistics as pure functions over arrays (no I/O, no Feast, no MLflow).

- :func:`compare_values`: served vs recomputed values of one feature (mismatch rate, largest
  difference; a null on one side only is a mismatch); :func:`compare_scores`: logged vs offline
  scores (the rows beyond a tolerance, how many, which);
- :func:`psi` and :func:`ks`: drift of one feature between two windows (PSI over quantile bins
  of the reference, nulls as their own bin; KS from scipy);
- :func:`adversarial_validation`: can a classifier tell old rows from new ones? Its AUC on rows
  it did not learn from, held out by entity (:func:`entity_disjoint_folds`), and the features
  whose permutation costs the most AUC (what moved);
- :func:`null_psi`, :func:`null_ks`, :func:`null_auc_lift`: the value each statistic exceeds
  with probability about ``alpha`` when both samples come from one distribution. A drift
  threshold is never below it, so sampling noise alone fails at most at the declared rate,
  from 200 rows a side up (the configured thresholds, calibrated on drift-free days, only make
  it lower);
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
# Rows a comparison names (its caller names their distinct requests: a request has many rows).
EXAMPLE_ROWS = 50
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
    positions = [int(i) for i in np.flatnonzero(mismatch)[:EXAMPLE_ROWS]]
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
    logged: ArrayLike, offline: ArrayLike, tolerance: float, examples: int = EXAMPLE_ROWS
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
    """Population stability index of ``current`` against ``reference`` (see :func:`binned`)."""
    return binned(reference, current, bins).psi(eps)


@dataclass(frozen=True)
class Binned:
    """Two samples' shares over the same bins, and their sizes."""

    reference: np.ndarray
    current: np.ndarray
    n_reference: int
    n_current: int

    @property
    def bins(self) -> int:
        return len(self.reference)

    def psi(self, eps: float = 1e-4) -> float:
        return float(_psi(self.reference, self.current, eps))


def _psi(p: np.ndarray, q: np.ndarray, eps: float) -> np.ndarray:
    """PSI over the last axis (empty bins get ``eps`` mass)."""
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def binned(reference: ArrayLike, current: ArrayLike, bins: int = 10) -> Binned:
    """The bin shares PSI compares. Numeric: quantile bins of the reference (so each holds
    ~1/bins of it); categorical: one bin per value. Nulls are one more bin either way."""
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
    return Binned(p, q, len(ref), len(cur))


# Draws of the PSI null: enough that its tail quantile rests on ~50 draws beyond it.
NULL_TAIL_DRAWS = 50
NULL_MAX_DRAWS = 200_000


def null_psi(shares: Binned, alpha: float, *, eps: float = 1e-4, seed: int = 0) -> float:
    """The PSI that two samples of one distribution over these bins exceed with probability
    at most about ``alpha``: a quantile of PSI over pairs of multinomial samples of the same
    sizes drawn from the pooled shares (a parametric bootstrap).

    Simulated rather than the chi-square approximation (PSI ~ (1/n + 1/m) chi2(bins - 1)),
    whose tail is too thin where a bin expects few rows of the smaller sample: the log term
    adds a heavy tail (twice the declared rate on counts over 200 rows). The quantile is taken
    at ``alpha / 2``: the bootstrap does not redraw the bins, which quantiles of the reference
    choose, and at ``alpha`` it let through up to 1.4 times the rate on counts with few
    distinct values (tests/unit/test_drift_statistics.py measures it over seeds).
    """
    n, m = shares.n_reference, shares.n_current
    if shares.bins < 2 or min(n, m) < 1:
        return 0.0
    tail = alpha / 2
    pooled = (n * shares.reference + m * shares.current) / (n + m)
    draws = int(min(NULL_MAX_DRAWS, max(2_000, NULL_TAIL_DRAWS / tail)))
    rng = np.random.default_rng(seed)
    p = rng.multinomial(n, pooled, size=draws) / n
    q = rng.multinomial(m, pooled, size=draws) / m
    return float(np.quantile(_psi(p, q, eps), 1 - tail))


def chi2_psi(shares: Binned, alpha: float) -> float:
    """The chi-square approximation of :func:`null_psi`, (1/n + 1/m) * chi2(bins - 1) at
    ``1 - alpha``: cheap, and too thin in the tail where a bin expects few rows."""
    from scipy.stats import chi2

    n, m = shares.n_reference, shares.n_current
    if shares.bins < 2 or min(n, m) < 1:
        return 0.0
    return float((1 / n + 1 / m) * chi2.ppf(1 - alpha, shares.bins - 1))


def null_ks(n_reference: int, n_current: int, alpha: float) -> float:
    """The two-sample KS statistic exceeded with probability about ``alpha`` under one
    distribution: c(alpha) * sqrt((n + m) / (n m)), c = sqrt(-ln(alpha / 2) / 2) (Smirnov's
    asymptotic bound; conservative when ties make the statistic smaller)."""
    if min(n_reference, n_current) < 1:
        return float("inf")
    c = math.sqrt(-math.log(alpha / 2) / 2)
    return c * math.sqrt((n_reference + n_current) / (n_reference * n_current))


def null_auc_lift(n_old: int, n_new: int, alpha: float) -> float:
    """The AUC above 0.5 that a classifier with nothing to learn reaches with probability about
    ``alpha`` on ``n_old`` + ``n_new`` held-out rows: the one-sided normal quantile of the
    Mann-Whitney AUC, whose standard deviation is sqrt((n0 + n1 + 1) / (12 n0 n1))."""
    from scipy.stats import norm

    if min(n_old, n_new) < 1:
        return float("inf")
    sd = math.sqrt((n_old + n_new + 1) / (12 * n_old * n_new))
    return float(norm.ppf(1 - alpha) * sd)


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
    auc: float  # on held-out rows; 0.5 when old and new cannot be told apart
    held_out_rows: tuple[int, int]  # (old, new) rows the AUC is measured on
    top_features: list[tuple[str, float]]  # (feature, AUC lost when it is permuted)
    by_entity: bool = False  # held out by entity (keys) rather than by row

    @property
    def lift(self) -> float:
        """AUC above chance."""
        return self.auc - 0.5


def _encode(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column):
            out[name] = column.astype(np.float64)
        else:
            out[name] = column.astype("category")
    return out


Fold = tuple[np.ndarray, np.ndarray]  # (training rows, held-out rows) as boolean masks


def entity_disjoint_folds(keys: pd.DataFrame, seed: int) -> list[Fold]:
    """Two folds whose training and held-out rows share no value of any column of ``keys``.

    Each key value lands on one of two sides by a seeded hash; a row belongs to a side when all
    its keys do (rows with keys on both sides are left out, about half with two keys). Rows of
    one entity on one day carry that entity's daily snapshot, and a classifier that saw some of
    them recognises the rest: held-out entities leave it only the distribution to go by.
    """
    side = np.ones(len(keys), dtype=bool)
    other = np.ones(len(keys), dtype=bool)
    hash_key = f"{seed:016d}"[-16:]
    for name in keys.columns:
        values = keys[name].astype(str).to_numpy(dtype=object)
        odd = (pd.util.hash_array(values, hash_key=hash_key) & 1).astype(bool)
        side &= odd
        other &= ~odd
    return [(side, other), (other, side)]


def _row_folds(y: np.ndarray, folds: int, seed: int) -> list[Fold]:
    from sklearn.model_selection import StratifiedKFold

    out = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y):
        masks = np.zeros(len(y), dtype=bool), np.zeros(len(y), dtype=bool)
        masks[0][train], masks[1][test] = True, True
        out.append(masks)
    return out


def adversarial_validation(
    old: pd.DataFrame,
    new: pd.DataFrame,
    *,
    keys: tuple[str, ...] = (),
    seed: int = 0,
    folds: int = 3,
    top: int = 5,
) -> Adversarial:
    """Old-vs-new classifier (see the module docstring) on equal-size samples of both.

    ``keys``: entity columns (not features) to hold out by (:func:`entity_disjoint_folds`);
    without them rows are held out at random in ``folds`` folds, which suits independent rows.
    Runs with one OpenMP thread: on a shared 2-core machine the default (one per core, in every
    fit) was ~30x slower under load.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _adversarial(old, new, keys=keys, seed=seed, folds=folds, top=top)


def _adversarial(
    old: pd.DataFrame, new: pd.DataFrame, *, keys: tuple[str, ...], seed: int, folds: int, top: int
) -> Adversarial:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance

    n = min(len(old), len(new))
    none = Adversarial(float("nan"), (0, 0), [], bool(keys))
    if n < 2 * folds:
        return none
    columns = list(old.columns)
    both = pd.concat(
        [old.sample(n, random_state=seed), new[columns].sample(n, random_state=seed + 1)],
        ignore_index=True,
    )
    X = _encode(both[[c for c in columns if c not in keys]])
    y = np.r_[np.zeros(n), np.ones(n)]
    splits = entity_disjoint_folds(both[list(keys)], seed) if keys else _row_folds(y, folds, seed)
    categorical = [not pd.api.types.is_numeric_dtype(X[c]) for c in X.columns]
    scores, labels, fitted = [], [], []
    for train, held_out in splits:
        if len(np.unique(y[train])) < 2 or len(np.unique(y[held_out])) < 2:
            return none
        model = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, categorical_features=categorical, random_state=seed
        ).fit(X[train], y[train])
        scores.append(model.predict_proba(X[held_out])[:, 1])
        labels.append(y[held_out])
        fitted.append((model, held_out))
    y_held, p_held = np.concatenate(labels), np.concatenate(scores)
    auc = _auc(y_held, p_held)
    # What moved: the AUC each feature's permutation costs on the first fold's held-out rows.
    model, held_out = fitted[0]
    importance = permutation_importance(
        model, X[held_out], y[held_out], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    ranked = sorted(zip(X.columns, importance.importances_mean, strict=True), key=lambda kv: -kv[1])
    counts = (int((y_held == 0).sum()), int((y_held == 1).sum()))
    return Adversarial(auc, counts, [(str(k), float(v)) for k, v in ranked[:top]], bool(keys))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def calibration_error(y: ArrayLike, p: ArrayLike) -> float:
    """|mean prediction / observed rate - 1| (NaN without positives)."""
    y = np.asarray(y, dtype=np.float64)
    rate = float(y.mean()) if y.size else float("nan")
    if not rate > 0:
        return float("nan")
    return abs(float(np.mean(p)) / rate - 1.0)
