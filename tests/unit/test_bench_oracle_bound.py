"""The information bound's estimator (bench/oracle_bound.py): per-group MAP logistic fits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[2] / "bench" / "oracle_bound.py"
_spec = importlib.util.spec_from_file_location("oracle_bound", _PATH)
assert _spec is not None and _spec.loader is not None
oracle_bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle_bound)


def _simulate(rows_per_group: int, groups: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 0.5, (groups, 3))
    group = np.repeat(np.arange(groups), rows_per_group)
    design = np.c_[np.ones(group.size), rng.standard_normal((group.size, 2))]
    offset = rng.normal(-2.0, 0.5, group.size)
    p = 1 / (1 + np.exp(-(offset + (design * theta[group]).sum(1))))
    label = (rng.random(group.size) < p).astype(float)
    return theta, group, design, offset, label


def test_map_fit_recovers_each_groups_parameters_with_enough_data() -> None:
    theta, group, design, offset, label = _simulate(rows_per_group=20_000)
    fitted = oracle_bound.fit_map(group, design, offset, label, len(theta), np.full(3, 1e-6))
    assert np.abs(fitted - theta).max() < 0.12


def test_map_fit_shrinks_to_the_prior_mean_with_little_data() -> None:
    theta, group, design, offset, label = _simulate(rows_per_group=5)
    weak = oracle_bound.fit_map(group, design, offset, label, len(theta), np.full(3, 1.0))
    strong = oracle_bound.fit_map(group, design, offset, label, len(theta), np.full(3, 1e4))
    assert np.abs(strong).max() < 1e-3 < np.abs(weak).max()
    # A group with no rows at all stays exactly at the prior mean.
    empty = oracle_bound.fit_map(group, design, offset, label, len(theta) + 1, np.ones(3))
    assert np.all(empty[-1] == 0)
