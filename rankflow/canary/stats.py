"""Statistics for promoting a challenger: pure functions over arrays, no I/O.

Offline: champion and challenger scored on the same holdout rows. :func:`paired_bootstrap`
resamples the rows (Poisson(1) weights, the same weights for both models, so the pair's
correlation is kept) and gives a percentile interval for the difference of AUC or log loss.
Non-inferiority holds when the whole interval is on the acceptable side of ``-margin``.

Online: clicks per arm, looked at after every batch of traffic. A fixed-horizon test peeked at
repeatedly rejects far more often than its alpha; the mixture sequential probability ratio test
(mSPRT; Robbins 1970, Johari et al., "Peeking at A/B tests", KDD 2017) gives an always-valid
p-value instead. With d = ctr_B - ctr_A, its variance V = ctr_A(1-ctr_A)/n_A +
ctr_B(1-ctr_B)/n_B and a N(0, tau^2) mixture over the true difference,

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

and p_n = min(1, 1 / max_{m <= n} Lambda_m). Stopping the first time p_n <= alpha keeps the
type-I error at most alpha whenever and however often one looks (under the normal approximation,
which the minimum sample size protects).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from rankflow.config import OnlineGateConfig

Metric = Literal["auc", "logloss"]
_EPS = 1e-7


# --------------------------------------------------------------------------------------------
# Offline: paired bootstrap


@dataclass(frozen=True)
class Interval:
    """``challenger - champion`` for one metric: the point estimate and a percentile interval."""

    metric: str
    difference: float
    low: float
    high: float
    level: float
    resamples: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


class _WeightedAUC:
    """AUC of fixed scores under any row weights in O(n): ties grouped once, then per weight
    vector AUC = sum_g P_g (N_below_g + N_g / 2) / (P N) over groups g of equal score."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        self.order = order
        self.labels = labels[order]
        self.starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])

    def __call__(self, weights: np.ndarray) -> float:
        w = weights[self.order]
        pos = np.add.reduceat(w * self.labels, self.starts)
        neg = np.add.reduceat(w * (1.0 - self.labels), self.starts)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 0 or total_neg <= 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (total_pos * total_neg))


def _row_logloss(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def paired_bootstrap(
    labels: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    metrics: tuple[Metric, ...] = ("auc", "logloss"),
    resamples: int = 500,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals of ``metric(challenger) - metric(champion)`` on the same rows."""
    labels = np.asarray(labels, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    challenger = np.asarray(challenger, dtype=np.float64)
    if not labels.shape == champion.shape == challenger.shape or labels.ndim != 1:
        raise ValueError("labels, champion and challenger must be 1-d arrays of one length")
    if labels.size == 0:
        raise ValueError("no rows to compare on")
    rng = np.random.default_rng(seed)
    stats = {
        "auc": (_WeightedAUC(champion, labels), _WeightedAUC(challenger, labels)),
        "logloss": (_row_logloss(labels, champion), _row_logloss(labels, challenger)),
    }

    def value(metric: str, which: int, weights: np.ndarray) -> float:
        stat = stats[metric][which]
        if metric == "auc":
            return stat(weights)
        return float(np.sum(weights * stat) / np.sum(weights))

    ones = np.ones_like(labels)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(resamples):
        weights = rng.poisson(1.0, labels.size).astype(np.float64)
        for metric in metrics:
            draws[metric].append(value(metric, 1, weights) - value(metric, 0, weights))
    tail = (1 - level) / 2
    out: dict[str, Interval] = {}
    for metric in metrics:
        sample = np.asarray(draws[metric])
        sample = sample[np.isfinite(sample)]
        low, high = np.quantile(sample, [tail, 1 - tail]) if sample.size else (np.nan, np.nan)
        out[metric] = Interval(
            metric=metric,
            difference=value(metric, 1, ones) - value(metric, 0, ones),
            low=float(low),
            high=float(high),
            level=level,
            resamples=resamples,
        )
    return out


def non_inferior(interval: Interval, margin: float) -> bool:
    """True if the challenger is at worst ``margin`` worse, at the interval's confidence.

    Higher is better for AUC (the low end must be above ``-margin``); lower is better for log
    loss (the high end must be below ``+margin``)."""
    if interval.metric == "auc":
        return bool(interval.low > -margin)
    return bool(interval.high < margin)


# --------------------------------------------------------------------------------------------
# Online: always-valid test of the CTR difference


def clustered_variance(
    clicks_a: np.ndarray, views_a: np.ndarray, clicks_b: np.ndarray, views_b: np.ndarray
) -> float:
    """Variance of ``ctr_b - ctr_a`` when users, not impressions, were randomised.

    Arguments are per-user totals in each arm. A CTR is a ratio of sums over users, and one
    user's impressions are correlated (a heavy user with a high CTR moves the whole arm), so the
    binomial ``p(1-p)/n`` understates the variance and an online test on it "finds" the arms'
    user mix. The delta method gives, per arm with ratio ``r = sum c / sum n`` over ``m`` users,
    ``Var(r) = m / (m - 1) * sum (c_u - r n_u)^2 / (sum n)^2`` (Deng, Knoblich and Lu, "Applying
    the delta method in metric analytics", KDD 2018); the arms are independent, so the two add.
    """

    def one(clicks: np.ndarray, views: np.ndarray) -> float:
        clicks, views = np.asarray(clicks, np.float64), np.asarray(views, np.float64)
        total, users = views.sum(), views.size
        if users < 2 or total <= 0:
            return float("inf")
        ratio = clicks.sum() / total
        return float(users / (users - 1) * np.sum((clicks - ratio * views) ** 2) / total**2)

    return one(clicks_a, views_a) + one(clicks_b, views_b)


@dataclass(frozen=True)
class AdjustedDifference:
    """A CTR difference ``ctr_b - ctr_a`` with its variance, after CUPED (``theta`` 0: none)."""

    difference: float
    variance: float
    theta: float
    variance_unadjusted: float

    @property
    def variance_reduction(self) -> float:
        """Share of the variance the covariate removed (0 without one)."""
        if not np.isfinite(self.variance_unadjusted) or self.variance_unadjusted <= 0:
            return 0.0
        return float(1.0 - self.variance / self.variance_unadjusted)


def _influence(clicks: np.ndarray, views: np.ndarray) -> tuple[float, np.ndarray]:
    """A ratio of sums over users and each user's delta-method influence on it:
    ``r = sum c / sum n`` and ``psi_u = (c_u - r n_u) / mean(n)``, so ``Var(r) ~ var(psi) / m``."""
    total = views.sum()
    if total <= 0:
        return float("nan"), np.zeros_like(views)
    ratio = clicks.sum() / total
    return float(ratio), (clicks - ratio * views) / views.mean()


def cuped_difference(
    arm_a: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    arm_b: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> AdjustedDifference:
    """The CTR difference between two user-randomised arms, adjusted by each user's CTR before
    the experiment (CUPED: Deng, Xu, Kohavi and Walker, WSDM 2013), with its delta-method
    variance.

    Each arm is per-user ``(clicks, views, pre_clicks, pre_views)``. With ``Y = sum c / sum n``
    and the pre-period ratio ``X = sum x / sum m`` per arm, the estimate is
    ``(Y_b - Y_a) - theta (X_b - X_a)``: the arms' pre-period difference has mean zero under
    randomisation (it is the user mix the split happened to draw), so subtracting it keeps the
    estimate unbiased and removes the part of the noise the users' own click rates explain.
    ``theta = cov(psi, phi) / var(phi)`` over both arms' users, where ``psi`` and ``phi`` are the
    users' influences on ``Y`` and ``X``; the variance is ``sum over arms var(psi - theta phi) /
    users``. A user without pre-period views has ``phi = 0`` (no adjustment). Without any
    pre-period views, ``theta = 0`` and this is :func:`clustered_variance`'s estimate.
    """
    parts = []
    for arm in (arm_a, arm_b):
        c, n, x, m = (np.asarray(v, np.float64) for v in arm)
        if c.size < 2 or n.sum() <= 0:
            return AdjustedDifference(float("nan"), float("inf"), 0.0, float("inf"))
        y, psi = _influence(c, n)
        if m.sum() > 0:
            pre, phi = _influence(x, m)
        else:
            pre, phi = 0.0, np.zeros_like(psi)
        parts.append((y, psi, pre, phi))
    phi_all = np.concatenate([p[3] for p in parts])
    psi_all = np.concatenate([p[1] for p in parts])
    denominator = float(np.sum(phi_all**2))
    theta = float(np.sum(psi_all * phi_all) / denominator) if denominator > 0 else 0.0
    (ya, psi_a, xa, phi_a), (yb, psi_b, xb, phi_b) = parts

    def var(values: np.ndarray) -> float:
        return float(np.var(values, ddof=1) / values.size)

    return AdjustedDifference(
        difference=float((yb - ya) - theta * (xb - xa)),
        variance=var(psi_a - theta * phi_a) + var(psi_b - theta * phi_b),
        theta=theta,
        variance_unadjusted=var(psi_a) + var(psi_b),
    )


@dataclass(frozen=True)
class Looks:
    """The evidence of an online comparison at each look so far, in order: cumulative clicks
    and views per arm (converted to 1-d float64 arrays), and optionally an estimate of the
    CTR difference to test instead of the raw one.

    ``variance``: of the CTR difference at each look (e.g. :func:`clustered_variance`); None
    means the binomial one, right only when impressions themselves were randomised; inf (too
    few users to estimate) counts as no evidence at that look. ``difference``: an adjusted
    estimate of the difference (with its ``variance``, e.g. :func:`cuped_difference`'s), which
    then also gives the direction of a decision."""

    clicks_champion: np.ndarray
    views_champion: np.ndarray
    clicks_challenger: np.ndarray
    views_challenger: np.ndarray
    variance: np.ndarray | None = field(default=None, kw_only=True)
    difference: np.ndarray | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("clicks_champion", "views_champion", "clicks_challenger", "views_challenger"):
            object.__setattr__(self, name, _looks_array(getattr(self, name)))
        for name in ("variance", "difference"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _looks_array(getattr(self, name)))


def _looks_array(values: npt.ArrayLike) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, dtype=np.float64))


def msprt_likelihood_ratios(looks: Looks, tau: float) -> np.ndarray:
    """Lambda at each look (see the module docstring), from the cumulative counts of ``looks``
    and, when it has them, its variance and adjusted difference."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    views_a, views_b = looks.views_champion, looks.views_challenger
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr_a = looks.clicks_champion / views_a
        ctr_b = looks.clicks_challenger / views_b
        variance = _look_variances(looks)
        diff = ctr_b - ctr_a if looks.difference is None else looks.difference
        diff = np.nan_to_num(diff, nan=0.0)
        tau2 = tau * tau
        ratio = np.sqrt(variance / (variance + tau2)) * np.exp(
            tau2 * diff**2 / (2 * variance * (variance + tau2))
        )
    return np.where((views_a > 0) & (views_b > 0), ratio, 1.0)


def _look_variances(looks: Looks) -> np.ndarray:
    """The variance of the CTR difference at each look: ``looks.variance`` bounded to a finite
    range (inf -> no evidence at that look), or the binomial one."""
    if looks.variance is not None:
        return np.clip(np.nan_to_num(looks.variance, posinf=1e6), 1e-12, 1e6)
    # Smoothed rates, so a zero-click start has a finite variance.
    sa = (looks.clicks_champion + 0.5) / (looks.views_champion + 1.0)
    sb = (looks.clicks_challenger + 0.5) / (looks.views_challenger + 1.0)
    return sa * (1 - sa) / looks.views_champion + sb * (1 - sb) / looks.views_challenger


def always_valid_p_values(looks: Looks, tau: float, min_views: int = 0) -> np.ndarray:
    """The running always-valid p-value ``min(1, 1 / max Lambda)`` at each look; looks where
    either arm has fewer than ``min_views`` views do not count (p stays 1 until then)."""
    ratio = msprt_likelihood_ratios(looks, tau)
    counted = (looks.views_champion >= min_views) & (looks.views_challenger >= min_views)
    ratio = np.where(counted, ratio, 1.0)
    return np.minimum(1.0, 1.0 / np.maximum.accumulate(ratio))


Verdict = Literal["promote", "reject", "continue"]


@dataclass(frozen=True)
class OnlineDecision:
    """What the canary phase decides after the looks so far, and why."""

    verdict: Verdict
    reason: str
    p_value: float
    ctr_champion: float
    ctr_challenger: float
    views_champion: int
    views_challenger: int
    looks: int

    def to_dict(self) -> dict[str, str | float | int]:
        """The decision's fields as a canary outcome records them (both phases; the look
        count is recorded with the phase)."""
        return {k: v for k, v in asdict(self).items() if k != "looks"}


def decide_online(looks: Looks, rule: OnlineGateConfig) -> OnlineDecision:
    """Promote when the always-valid test shows the challenger's CTR higher, reject when lower;
    keep the champion (reject) once both arms reach ``rule.max_views`` without evidence;
    otherwise ask for more traffic. With an adjusted ``looks.difference``, its sign gives the
    direction."""
    p = always_valid_p_values(looks, rule.tau, rule.min_views)
    last = _last_look(looks, p)
    name = f"mSPRT alpha={rule.alpha} tau={rule.tau}"
    p_value = f"{last.p_value:.4g}"
    if last.p_value <= rule.alpha:
        better, shown = _direction(looks, last)
        return replace(
            last,
            verdict="promote" if better else "reject",
            reason=f"{name}: always-valid p={p_value} <= {rule.alpha}; {shown}",
        )
    if min(last.views_champion, last.views_challenger) >= rule.max_views:
        return replace(
            last,
            verdict="reject",
            reason=f"{name}: no evidence (p={p_value}) at the horizon of {rule.max_views} views "
            "per arm; the champion stays",
        )
    return replace(
        last,
        reason=f"{name}: p={p_value} > {rule.alpha} with {last.views_challenger} challenger "
        f"views (min {rule.min_views}, horizon {rule.max_views}); more traffic needed",
    )


def _last_look(looks: Looks, p: np.ndarray) -> OnlineDecision:
    """The figures of the last look, as a "continue" decision whose reason is still to say."""
    ca, va = looks.clicks_champion[-1], looks.views_champion[-1]
    cb, vb = looks.clicks_challenger[-1], looks.views_challenger[-1]
    return OnlineDecision(
        verdict="continue",
        reason="",
        p_value=float(p[-1]),
        ctr_champion=float(ca / va) if va else float("nan"),
        ctr_challenger=float(cb / vb) if vb else float("nan"),
        views_champion=int(va),
        views_challenger=int(vb),
        looks=int(p.size),
    )


def _direction(looks: Looks, last: OnlineDecision) -> tuple[bool, str]:
    """Whether the challenger is the better arm, and the figures that say so."""
    ctr_a, ctr_b = last.ctr_champion, last.ctr_challenger
    if looks.difference is None:
        better = ctr_b > ctr_a
        return better, f"challenger CTR {ctr_b:.5f} {'>' if better else '<'} champion {ctr_a:.5f}"
    adjusted = float(looks.difference[-1])
    shown = (
        f"CUPED-adjusted CTR difference {adjusted:+.5f} (raw: challenger {ctr_b:.5f}, "
        f"champion {ctr_a:.5f})"
    )
    return adjusted > 0, shown
