"""The drift statistics' declared false-alarm rate, as properties over many seeds.

Two samples of one distribution must fail at most at the declared rate, whatever their size and
kind (continuous, counts with ties, categories with nulls); a known shift must still fail. The
configured thresholds are set to zero here so that only the sampling guard decides: the guard
is what makes the rate hold on small samples, the configured floors only make it lower.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from rankflow.monitoring.stats import (
    adversarial_validation,
    binned,
    entity_disjoint_folds,
    ks,
    null_auc_lift,
    null_ks,
    null_psi,
)

Draw = Callable[[np.random.Generator, int], pd.Series]

DRAWS: dict[str, Draw] = {
    "normal": lambda rng, n: pd.Series(rng.normal(0, 1, n)),
    "counts": lambda rng, n: pd.Series(rng.poisson(3, n).astype(np.float64)),
    "skewed counts with nulls": lambda rng, n: pd.Series(
        np.where(rng.random(n) < 0.15, np.nan, rng.negative_binomial(1, 0.05, n))
    ),
    "categories with nulls": lambda rng, n: pd.Series(
        rng.choice(
            np.array(["a", "b", "c", "d", None], dtype=object), n, p=[0.4, 0.3, 0.2, 0.05, 0.05]
        )
    ),
}
SEEDS = 400
ALPHA = 0.02


def _allowed(rate: float, trials: int) -> float:
    """The declared rate plus three binomial standard errors of its estimate over ``trials``."""
    return rate + 3 * np.sqrt(rate * (1 - rate) / trials)


@pytest.mark.parametrize("kind", sorted(DRAWS))
@pytest.mark.parametrize(("n_reference", "n_current"), [(200, 200), (1000, 200)])
def test_psi_of_same_distribution_samples_exceeds_its_null_quantile_at_most_at_alpha(
    kind: str, n_reference: int, n_current: int
) -> None:
    draw = DRAWS[kind]
    fails = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        shares = binned(draw(rng, n_reference), draw(rng, n_current))
        fails += shares.psi() >= null_psi(shares, ALPHA)  # seeded apart from the data, as the check
    assert fails / SEEDS <= _allowed(ALPHA, SEEDS), f"{kind}: {fails} of {SEEDS} failed"


@pytest.mark.parametrize("kind", ["normal", "counts", "skewed counts with nulls"])
def test_ks_of_same_distribution_samples_exceeds_its_null_quantile_at_most_at_alpha(
    kind: str,
) -> None:
    draw = DRAWS[kind]
    fails = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        reference, current = draw(rng, 1000), draw(rng, 200)
        statistic, _ = ks(reference, current)
        fails += statistic >= null_ks(reference.notna().sum(), current.notna().sum(), ALPHA)
    assert fails / SEEDS <= _allowed(ALPHA, SEEDS), f"{kind}: {fails} of {SEEDS} failed"


def test_a_known_shift_exceeds_the_null_quantiles() -> None:
    rng = np.random.default_rng(0)
    reference, moved = rng.normal(0, 1, 2000), rng.normal(0.3, 1, 2000)
    shares = binned(reference, moved)
    assert shares.psi() > null_psi(shares, 0.001)
    assert ks(reference, moved)[0] > null_ks(2000, 2000, 0.001)
    more_nulls = np.where(rng.random(2000) < 0.1, np.nan, rng.normal(0, 1, 2000))
    shares = binned(reference, more_nulls)
    assert shares.bins == 11  # ten quantile bins and the nulls' own
    assert shares.psi() > null_psi(shares, 0.001)


def test_null_quantiles_shrink_with_the_samples_and_grow_with_confidence() -> None:
    rng = np.random.default_rng(0)
    draw = DRAWS["normal"]
    small, large = binned(draw(rng, 500), draw(rng, 500)), binned(draw(rng, 5000), draw(rng, 5000))
    assert null_psi(large, 0.01) < null_psi(small, 0.01)
    assert null_psi(small, 0.001) > null_psi(small, 0.01)
    categories = binned(rng.integers(0, 30, 500).astype(str), rng.integers(0, 30, 500).astype(str))
    assert null_psi(categories, 0.01) > null_psi(small, 0.01)  # more bins, more room to move
    assert null_ks(5000, 5000, 0.01) < null_ks(500, 500, 0.01)
    assert null_auc_lift(2500, 2500, 0.01) < null_auc_lift(250, 250, 0.01)
    assert null_psi(binned(["a"] * 100, ["a"] * 100), 0.01) == 0.0  # one bin: nothing can move


# ------------------------------------------------------------------ the adversarial classifier
def test_entity_disjoint_folds_share_no_entity_between_training_and_held_out_rows() -> None:
    rng = np.random.default_rng(0)
    keys = pd.DataFrame(
        {"user_id": rng.integers(0, 300, 4000), "item_id": rng.integers(0, 80, 4000)}
    )
    folds = entity_disjoint_folds(keys, seed=3)
    assert len(folds) == 2
    for train, held_out in folds:
        assert train.sum() > 500 and held_out.sum() > 500
        for column in keys.columns:
            assert not set(keys.loc[train, column]) & set(keys.loc[held_out, column])


def _snapshots(rng: np.random.Generator, day: int, n: int, shift: float = 0.0) -> pd.DataFrame:
    """One day's rows: every row of an item carries that item's value of the day (a daily
    snapshot, as the daily feature views are), drawn from one distribution on every day."""
    items = rng.integers(0, 200, n)
    per_item = rng.normal(shift, 1, 200)
    return pd.DataFrame(
        {
            "item_id": items,
            "user_id": rng.integers(0, 5000, n),
            "item_stat": per_item[items],
            "noise": rng.normal(0, 1, n),
            "day": day,
        }
    )


@pytest.mark.slow
def test_daily_snapshots_of_one_distribution_are_not_told_apart_on_held_out_entities() -> None:
    """Rows of one day share their items' snapshot values, so a classifier that sees some rows
    of an item-day learns to recognise the rest of them: drift where there is none. Held-out
    items and users leave it only the distribution to go by."""
    rng = np.random.default_rng(0)
    reference = pd.concat([_snapshots(rng, day, 300) for day in range(5)], ignore_index=True)
    current = _snapshots(rng, 5, 1500)
    features = ["item_id", "user_id", "item_stat", "noise"]
    rows_apart = adversarial_validation(reference[features[2:]], current[features[2:]], seed=0)
    assert rows_apart.lift > 0.1  # the leak this guards against
    held_out = adversarial_validation(
        reference[features], current[features], keys=("item_id", "user_id"), seed=0
    )
    assert held_out.lift < null_auc_lift(*held_out.held_out_rows, 0.001)
    moved = pd.concat([_snapshots(rng, 5, 1500, shift=1.0)], ignore_index=True)
    shifted = adversarial_validation(
        reference[features], moved[features], keys=("item_id", "user_id"), seed=0
    )
    assert shifted.lift > 0.15
    assert shifted.top_features[0][0] == "item_stat"


@pytest.mark.slow
def test_the_classifier_on_same_distribution_samples_fails_at_most_at_alpha() -> None:
    seeds, alpha = 40, 0.05
    fails = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        old = pd.DataFrame({"x": rng.normal(0, 1, 300), "c": rng.choice(["a", "b"], 300)})
        new = pd.DataFrame({"x": rng.normal(0, 1, 300), "c": rng.choice(["a", "b"], 300)})
        result = adversarial_validation(old, new, seed=seed)
        fails += result.lift >= null_auc_lift(*result.held_out_rows, alpha)
    assert fails / seeds <= _allowed(alpha, seeds), f"{fails} of {seeds} failed"
