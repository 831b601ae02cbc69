"""The canary's statistics: a known effect is detected, no effect is not, at the declared rate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from rankflow.canary.stats import (
    Interval,
    Looks,
    always_valid_p_values,
    decide_online,
    msprt_likelihood_ratios,
    non_inferior,
    paired_bootstrap,
)
from rankflow.config import OnlineGateConfig


def _holdout(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    logit = rng.normal(-2.5, 1.0, n)
    truth = 1 / (1 + np.exp(-logit))
    return (rng.random(n) < truth).astype(float), truth


def _noisy(rng: np.random.Generator, truth: np.ndarray, sd: float) -> np.ndarray:
    logit = np.log(truth / (1 - truth)) + rng.normal(0, sd, truth.size)
    return 1 / (1 + np.exp(-logit))


def test_point_estimates_match_sklearn_and_ties_count_half() -> None:
    rng = np.random.default_rng(0)
    labels, truth = _holdout(rng, 3000)
    champion = np.round(_noisy(rng, truth, 1.0), 2)  # many ties
    challenger = truth
    result = paired_bootstrap(labels, champion, challenger, resamples=20, seed=1)
    expected_auc = roc_auc_score(labels, challenger) - roc_auc_score(labels, champion)
    expected_ll = log_loss(labels, challenger) - log_loss(labels, champion)
    assert result["auc"].difference == pytest.approx(expected_auc, abs=1e-12)
    assert result["logloss"].difference == pytest.approx(
        expected_ll, abs=1e-6
    )  # clipping eps differs


def test_a_better_challenger_is_detected_and_non_inferior() -> None:
    rng = np.random.default_rng(1)
    labels, truth = _holdout(rng, 20_000)
    result = paired_bootstrap(labels, _noisy(rng, truth, 1.5), truth, resamples=200, seed=2)
    assert result["auc"].low > 0
    assert result["logloss"].high < 0
    assert non_inferior(result["auc"], margin=0.0)
    assert non_inferior(result["logloss"], margin=0.0)


def test_a_worse_challenger_fails_non_inferiority() -> None:
    rng = np.random.default_rng(2)
    labels, truth = _holdout(rng, 20_000)
    result = paired_bootstrap(labels, truth, _noisy(rng, truth, 1.5), resamples=200, seed=3)
    assert not non_inferior(result["auc"], margin=0.005)
    assert not non_inferior(result["logloss"], margin=0.001)


@pytest.mark.slow
def test_interval_covers_zero_at_the_declared_rate_when_models_are_equally_good() -> None:
    """Two models with the same noise level: the 90% interval of the AUC difference contains
    0 in about 90% of holdouts (checked over 120 seeds, binomial slack of 3 sd)."""
    covered = 0
    seeds = 120
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        labels, truth = _holdout(rng, 2000)
        a, b = _noisy(rng, truth, 1.0), _noisy(rng, truth, 1.0)
        result = paired_bootstrap(
            labels, a, b, metrics=("auc",), resamples=150, level=0.9, seed=seed
        )
        covered += result["auc"].low <= 0 <= result["auc"].high
    rate = covered / seeds
    slack = 3 * np.sqrt(0.9 * 0.1 / seeds)
    assert rate >= 0.9 - slack - 0.05  # percentile intervals run slightly narrow on small n


def _stream(
    rng: np.random.Generator, ctr_a: float, ctr_b: float, looks: int, batch: int
) -> tuple[np.ndarray, ...]:
    views = np.arange(1, looks + 1) * batch
    clicks_a = np.cumsum(rng.binomial(batch, ctr_a, looks))
    clicks_b = np.cumsum(rng.binomial(batch, ctr_b, looks))
    return clicks_a, views, clicks_b, views


def test_no_effect_is_rarely_declared_under_continuous_monitoring() -> None:
    """A/A with a look after every 500 views per arm for 40 looks: the always-valid test stops
    wrongly in at most alpha of 600 runs (+3 sd), where a naive z-test peeked at every look
    would reject in several times that."""
    alpha, runs = 0.05, 600
    rng = np.random.default_rng(7)
    false_stops = naive = 0
    for _ in range(runs):
        ca, va, cb, vb = _stream(rng, 0.05, 0.05, looks=40, batch=500)
        p = always_valid_p_values(Looks(ca, va, cb, vb), tau=0.01, min_views=1000)
        false_stops += bool(np.any(p <= alpha))
        pooled = (ca + cb) / (va + vb)
        z = (cb / vb - ca / va) / np.sqrt(pooled * (1 - pooled) * 2 / va)
        naive += bool(np.any(np.abs(z) > 1.96))
    assert false_stops / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert naive > 2 * false_stops  # the reason for the always-valid test


def test_a_known_effect_is_detected_in_both_directions() -> None:
    rng = np.random.default_rng(8)
    ca, va, cb, vb = _stream(rng, 0.05, 0.06, looks=40, batch=1000)
    rule = OnlineGateConfig(alpha=0.05, tau=0.01, min_views=1000, max_views=10**6)
    better = decide_online(Looks(ca, va, cb, vb), rule)
    assert better.verdict == "promote", better.reason
    worse = decide_online(Looks(cb, vb, ca, va), rule)
    assert worse.verdict == "reject" and "<" in worse.reason


def test_too_little_traffic_continues_and_the_horizon_keeps_the_champion() -> None:
    rng = np.random.default_rng(9)
    ca, va, cb, vb = _stream(rng, 0.05, 0.05, looks=3, batch=300)
    rule = OnlineGateConfig(alpha=0.05, tau=0.01, min_views=1000, max_views=5000)
    early = decide_online(Looks(ca, va, cb, vb), rule)
    assert early.verdict == "continue" and early.p_value == 1.0
    ca, va, cb, vb = _stream(rng, 0.05, 0.05, looks=10, batch=600)
    late = decide_online(Looks(ca, va, cb, vb), rule)
    assert late.verdict == "reject" and "horizon" in late.reason


def test_likelihood_ratio_is_one_without_traffic_and_grows_with_evidence() -> None:
    assert msprt_likelihood_ratios(Looks([0], [0], [0], [0]), tau=0.01)[0] == 1.0
    small = msprt_likelihood_ratios(Looks([50], [1000], [70], [1000]), tau=0.01)[0]
    large = msprt_likelihood_ratios(Looks([500], [10000], [700], [10000]), tau=0.01)[0]
    assert large > small
    with pytest.raises(ValueError, match="tau"):
        msprt_likelihood_ratios(Looks([1], [2], [1], [2]), tau=0)


def test_interval_serialises() -> None:
    interval = Interval("auc", 0.01, -0.002, 0.02, 0.95, 100)
    assert interval.to_dict()["low"] == -0.002


def _aa_looks(seed: int, looks: int = 8) -> tuple[np.ndarray, ...]:
    """An A/A canary with heavy, heterogeneous users split by user: cumulative counts per look,
    plus the clustered variance at each look."""
    from rankflow.canary.stats import clustered_variance

    rng = np.random.default_rng(seed)
    users = 300
    ctr = rng.beta(2, 14, users)  # users differ a lot
    activity = rng.lognormal(0, 1.2, users)  # and a few do most of the traffic
    arm = rng.random(users) < 0.5
    views = np.zeros(users)
    clicks = np.zeros(users)
    out: list[list[float]] = [[], [], [], [], []]
    for _ in range(looks):
        n = rng.poisson(activity * 5)
        views += n
        clicks += rng.binomial(n, ctr)
        a, b = ~arm, arm
        for k, value in enumerate(
            (clicks[a].sum(), views[a].sum(), clicks[b].sum(), views[b].sum())
        ):
            out[k].append(value)
        out[4].append(clustered_variance(clicks[a], views[a], clicks[b], views[b]))
    return tuple(np.array(x) for x in out)


def test_clustered_variance_keeps_the_aa_error_rate_where_the_binomial_one_does_not() -> None:
    """Users are randomised, so impressions are not independent: over 300 A/A canaries the
    binomial variance 'finds' the arms' user mix far more often than alpha; the delta-method
    variance over users stays at about alpha (always-valid, so every look counts)."""
    alpha, trials = 0.05, 300
    binomial = clustered = 0
    for seed in range(trials):
        ca, va, cb, vb, var = _aa_looks(seed)
        binomial_looks = Looks(ca, va, cb, vb)
        clustered_looks = Looks(ca, va, cb, vb, variance=var)
        binomial += always_valid_p_values(binomial_looks, tau=0.01, min_views=200)[-1] <= alpha
        clustered += always_valid_p_values(clustered_looks, tau=0.01, min_views=200)[-1] <= alpha
    assert clustered / trials <= alpha + 0.03  # sampling slack over 300 trials
    assert binomial / trials > 2 * alpha  # the flaw the clustered variance removes


def test_clustered_variance_still_detects_a_real_effect() -> None:
    from rankflow.canary.stats import clustered_variance

    rng = np.random.default_rng(1)
    users = 2000
    ctr = rng.beta(2, 14, users)
    views = rng.poisson(rng.lognormal(0, 1.0, users) * 30).astype(float)
    arm = rng.random(users) < 0.5
    clicks = rng.binomial(views.astype(int), np.where(arm, np.minimum(ctr * 1.3, 1), ctr))
    var = clustered_variance(clicks[~arm], views[~arm], clicks[arm], views[arm])
    p = always_valid_p_values(
        Looks(
            [clicks[~arm].sum()],
            [views[~arm].sum()],
            [clicks[arm].sum()],
            [views[arm].sum()],
            variance=[var],
        ),
        tau=0.01,
        min_views=100,
    )
    assert p[-1] <= 0.05


# CUPED: the users' own click rates before the phase discount the arms' user mix


def _users_with_history(
    seed: int, lift: float, users: int = 1500, days: int = 8
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Users with persistent click rates (heavy-tailed activity); a pre-period of ``days`` days,
    then one day of the phase where the challenger arm's rates are multiplied by ``1 + lift``."""
    rng = np.random.default_rng(seed)
    ctr = rng.beta(1.5, 10, users)
    activity = rng.lognormal(0, 1.0, users)
    arm = rng.random(users) < 0.5
    pre_views = rng.poisson(activity * 3 * days).astype(float)
    pre_clicks = rng.binomial(pre_views.astype(int), ctr).astype(float)
    views = rng.poisson(activity * 3).astype(float)
    rate = np.where(arm, np.minimum(ctr * (1 + lift), 1.0), ctr)
    clicks = rng.binomial(views.astype(int), rate).astype(float)
    a, b = ~arm & (views > 0), arm & (views > 0)
    return (
        (clicks[a], views[a], pre_clicks[a], pre_views[a]),
        (clicks[b], views[b], pre_clicks[b], pre_views[b]),
    )


def test_cuped_without_a_pre_period_is_the_clustered_estimate() -> None:
    from rankflow.canary.stats import clustered_variance, cuped_difference

    a, b = _users_with_history(0, 0.1)
    none = tuple(np.zeros_like(a[0]) for _ in range(2))
    adjusted = cuped_difference((*a[:2], *none), (*b[:2], *none[:1], np.zeros_like(b[0])))
    raw = b[0].sum() / b[1].sum() - a[0].sum() / a[1].sum()
    assert adjusted.theta == 0.0 and adjusted.variance_reduction == 0.0
    assert adjusted.difference == pytest.approx(raw)
    assert adjusted.variance == pytest.approx(clustered_variance(a[0], a[1], b[0], b[1]))


def test_cuped_removes_most_of_the_user_mix_variance_and_stays_unbiased() -> None:
    """Over many splits with a known lift, the adjusted differences center on the same effect as
    the raw ones, scatter less, and their stated variance matches their scatter."""
    from rankflow.canary.stats import cuped_difference

    raw, adjusted, stated = [], [], []
    for seed in range(300):
        a, b = _users_with_history(seed, 0.05)
        estimate = cuped_difference(a, b)
        raw.append(b[0].sum() / b[1].sum() - a[0].sum() / a[1].sum())
        adjusted.append(estimate.difference)
        stated.append(estimate.variance)
    raw_arr, adj_arr = np.array(raw), np.array(adjusted)
    assert np.var(adj_arr) < 0.7 * np.var(raw_arr)  # the pre-period explains much of the noise
    se = np.sqrt(np.var(adj_arr) / adj_arr.size)
    assert abs(adj_arr.mean() - raw_arr.mean()) < 4 * se  # same center: no bias added
    assert adj_arr.mean() > 4 * se  # and the lift is there
    assert 0.75 < np.mean(stated) / np.var(adj_arr) < 1.33  # the variance it states is right


def test_cuped_keeps_the_aa_error_rate_under_continuous_monitoring() -> None:
    """A/A canaries decided on the adjusted difference at 5 looks: the always-valid rule
    declares a difference in at most about alpha of them."""
    from rankflow.canary.stats import cuped_difference

    alpha, trials, false = 0.05, 200, 0
    for seed in range(trials):
        a, b = _users_with_history(1000 + seed, 0.0)
        cut = np.linspace(0.2, 1.0, 5)
        looks = []
        for share in cut:  # growing prefixes of the users stand in for the looks
            ka, kb = int(share * a[0].size), int(share * b[0].size)
            part_a, part_b = tuple(x[:ka] for x in a), tuple(x[:kb] for x in b)
            looks.append((part_a, part_b, cuped_difference(part_a, part_b)))
        counts = [[p[0][0].sum(), p[0][1].sum(), p[1][0].sum(), p[1][1].sum()] for p in looks]
        ca, va, cb, vb = (np.array(x) for x in zip(*counts, strict=True))
        evidence = Looks(
            ca,
            va,
            cb,
            vb,
            variance=np.array([e.variance for *_, e in looks]),
            difference=np.array([e.difference for *_, e in looks]),
        )
        p = always_valid_p_values(evidence, tau=0.01, min_views=200)
        false += p[-1] <= alpha
    assert false / trials <= alpha + 0.035


def test_cuped_detects_a_lift_the_raw_test_misses_more_often() -> None:
    """Same traffic, same rule: with the adjustment a 15% lift is found in more of the runs
    (and in most of them)."""
    from rankflow.canary.stats import cuped_difference

    found_raw = found_cuped = 0
    for seed in range(100):
        a, b = _users_with_history(5000 + seed, 0.15, users=4000)
        est = cuped_difference(a, b)
        counts = ([a[0].sum()], [a[1].sum()], [b[0].sum()], [b[1].sum()])
        raw = Looks(*counts, variance=[est.variance_unadjusted])
        cuped = Looks(*counts, variance=[est.variance], difference=[est.difference])
        raw_p = always_valid_p_values(raw, tau=0.01, min_views=100)
        cuped_p = always_valid_p_values(cuped, tau=0.01, min_views=100)
        found_raw += raw_p[-1] <= 0.05
        found_cuped += cuped_p[-1] <= 0.05
    assert found_cuped > found_raw
    assert found_cuped >= 50


def test_a_decision_on_the_adjusted_difference_follows_its_sign() -> None:
    """The raw CTRs can point the other way (the user mix); the adjusted estimate decides."""
    d = decide_online(
        Looks([1200], [10000], [1150], [10000], variance=[1e-6], difference=[0.008]),
        OnlineGateConfig(alpha=0.05, tau=0.01, min_views=100, max_views=100000),
    )
    assert d.verdict == "promote"
    assert "CUPED-adjusted CTR difference +0.00800" in d.reason
