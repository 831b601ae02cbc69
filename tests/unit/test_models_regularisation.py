"""Regularisation and stopping rules of the trainer."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from models.networks import build_model
from models.spec import FeatureSpec
from models.train import RunOptions, _make_optimizer, train_model
from tests.fixtures.synthetic import make_splits, small_model_config

pytestmark = pytest.mark.usefixtures("private_home")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits():
    return make_splits(3000, seed=3)


def _train(splits, tmp_path: Path, overrides: dict):
    return train_model(
        "wide_deep",
        splits.train,
        splits.valid,
        splits.schema,
        small_model_config(overrides),
        RunOptions(checkpoint_dir=tmp_path / "run"),
    )


def test_evaluation_interval_is_a_fraction_of_an_epoch(splits, tmp_path: Path) -> None:
    result = _train(
        splits,
        tmp_path,
        {"training.eval_every_epochs": 0.25, "training.max_epochs": 1, "training.patience": 99},
    )
    steps_per_epoch = math.ceil(len(splits.train) / 256)
    steps = [int(h["step"]) for h in result.history]
    every = round(0.25 * steps_per_epoch)
    assert steps == sorted({*range(every, steps_per_epoch + 1, every), steps_per_epoch})


def test_patience_in_epochs_does_not_depend_on_the_evaluation_interval(
    splits, tmp_path: Path
) -> None:
    # A learning rate so high the valid loss gets worse after the first evaluations.
    overrides = {
        "training.learning_rate": 0.2,
        "training.max_epochs": 10,
        "training.patience_epochs": 1.0,
        "training.patience": 1,
    }
    steps_per_epoch = math.ceil(len(splits.train) / 256)
    for fraction in (0.25, 0.5):
        result = _train(
            splits, tmp_path / str(fraction), {**overrides, "training.eval_every_epochs": fraction}
        )
        assert result.stopped_early
        last, best = int(result.history[-1]["step"]), result.best_step
        # Stopped at the first evaluation at least one epoch past the best one.
        assert steps_per_epoch <= last - best < steps_per_epoch + fraction * steps_per_epoch + 1


def test_a_small_valid_split_trains_a_fixed_budget_and_keeps_the_last_weights(
    splits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = {
        "training.min_valid_positives": 10**6,
        "training.small_valid_epochs": 1.5,
        "training.max_epochs": 5,
        "training.eval_every_epochs": 0.5,
    }
    with caplog.at_level(logging.WARNING):
        result = _train(splits, tmp_path, overrides)
    steps_per_epoch = math.ceil(len(splits.train) / 256)
    assert result.best_step == int(result.history[-1]["step"]) == math.ceil(1.5 * steps_per_epoch)
    assert not result.stopped_early or result.best_step == math.ceil(1.5 * steps_per_epoch)
    assert "positives (< training.min_valid_positives" in caplog.text


def test_id_tables_get_their_own_learning_rate_and_l2(splits) -> None:
    config = small_model_config(
        {
            "training.embedding_learning_rate": 0.05,
            "training.embedding_weight_decay": 1e-5,
            "training.weight_decay": 1e-3,
        }
    )
    spec = FeatureSpec.fit(splits.schema, splits.train, config)
    model = build_model("dcn", spec, config)
    dense, ids = _make_optimizer(model, config.training).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].split(".")[0] in ("embeddings", "wide") for p in ids["params"])
    assert not any(".tables." in names[id(p)] for p in dense["params"])
    assert (ids["lr"], ids["weight_decay"]) == (0.05, 1e-5)
    assert (dense["lr"], dense["weight_decay"]) == (config.training.learning_rate, 1e-3)
    assert len(ids["params"]) + len(dense["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(("kind", "expected"), [("dcn", 3e-5), ("wide_deep", 1e-3)])
def test_a_networks_own_weight_decay_replaces_the_training_one(
    splits, kind: str, expected: float
) -> None:
    """``dcn.weight_decay`` sets DCN's dense L2; Wide & Deep, with none of its own, keeps
    ``training.weight_decay``; the id tables keep theirs either way."""
    config = small_model_config(
        {
            "training.weight_decay": 1e-3,
            "training.embedding_weight_decay": 1e-5,
            "dcn.weight_decay": 3e-5,
            "wide_deep.weight_decay": None,
        }
    )
    assert config.dense_weight_decay(kind) == expected
    spec = FeatureSpec.fit(splits.schema, splits.train, config)
    model = build_model(kind, spec, config)
    dense, ids = _make_optimizer(
        model, config.training, dense_weight_decay=config.dense_weight_decay(kind)
    ).param_groups
    assert (dense["weight_decay"], ids["weight_decay"]) == (expected, 1e-5)
