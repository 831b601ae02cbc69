"""Warm start from a production checkpoint: match by name, resize, remap, report; distillation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import parse_model_config
from models.networks import build_model
from models.scoring import Scorer
from models.spec import FeatureSpec
from models.train import RunOptions, train_model
from models.warm_start import warm_start
from tests.fixtures.synthetic import make_splits, small_model_config

pytestmark = pytest.mark.usefixtures("private_home")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits():
    return make_splits(8000, seed=21)


@pytest.fixture(scope="module")
def production(splits, tmp_path_factory: pytest.TempPathFactory):
    """The 'champion': a DCN trained on the first window."""
    run = tmp_path_factory.mktemp("production") / "dcn"
    return train_model(
        "dcn",
        splits.train,
        splits.valid,
        splits.schema,
        small_model_config({"training.max_epochs": 3}),
        RunOptions(checkpoint_dir=run),
    )


def test_same_spec_loads_everything_and_reproduces_the_scores(production, splits) -> None:
    torch.manual_seed(123)
    model = build_model("dcn", production.spec, production.config)
    report = warm_start(model, production.run_dir)
    assert report.resized == {} and report.initialised == {} and report.unused == []
    assert sorted(report.loaded) == sorted(n for n, _ in model.named_parameters())
    scorer = Scorer(model=model.eval(), spec=production.spec, kind="dcn")
    expected = Scorer.from_checkpoint(production.run_dir).predict_proba(splits.test)
    np.testing.assert_array_equal(scorer.predict_proba(splits.test), expected)


def test_changed_hash_size_and_new_feature(production, splits) -> None:
    # The next model: more user buckets, one more categorical feature, one dense column less.
    data = small_model_config({"features.categorical.user_id.buckets": 1201}).to_dict()
    del data["features"]["numeric"]["hour_cos"]
    data["features"]["categorical"]["hour_bucket"] = {"embedding_dim": 2}
    data["features"]["undeclared"] = "ignore"
    config = parse_model_config(data)
    train = splits.train.assign(hour_bucket=splits.train["hour_of_day"] // 6)
    schema = {**splits.schema, "hour_bucket": "INT64"}
    spec = FeatureSpec.fit(schema, train, config)
    torch.manual_seed(0)
    model = build_model("dcn", spec, config)
    fresh = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = warm_start(model, production.checkpoint_path)

    assert "embeddings.tables.hour_bucket.weight" in report.initialised
    user = "embeddings.tables.user_id.weight"
    # 997 buckets + null + unseen rows -> 1201 + 2.
    assert report.resized[user].startswith("[999, 8] -> [1203, 8]: copied 7992 of 9624")
    new_user = dict(model.named_parameters())[user]
    old_state = production.model.state_dict()
    assert torch.equal(new_user[:999], old_state[user])
    assert torch.equal(new_user[999:], fresh[user][999:])  # beyond the old table: fresh rows

    # The first cross layer reads x0: old columns are copied to their new positions by name,
    # the new feature's columns stay fresh, the dropped column is simply gone.
    w = "cross.layers.0.linear.weight"
    assert w in report.resized
    old_keys = production.model.x0_keys()
    new_keys = model.x0_keys()
    i_old, j_old = old_keys.index("dense:item_price"), old_keys.index("emb:category#1")
    i_new, j_new = new_keys.index("dense:item_price"), new_keys.index("emb:category#1")
    new_w = dict(model.named_parameters())[w]
    assert new_w[i_new, j_new] == old_state[w][i_old, j_old]
    hb = new_keys.index("emb:hour_bucket#0")
    assert torch.equal(new_w[hb], fresh[w][hb])
    assert "dense:hour_cos" not in new_keys
    assert report.unused == []
    assert "resized" in report.summary() and "hour_bucket" in report.summary()


def test_vocabulary_rows_follow_their_token(production, splits) -> None:
    # A later window where category frequencies differ: the vocabulary order changes.
    later = splits.valid.copy()
    later = later[later["category"] != later["category"].mode()[0]]  # drop the top category
    spec = FeatureSpec.fit(splits.schema, later, production.config)
    old_cat = next(c for c in production.spec.categorical if c.name == "category")
    new_cat = next(c for c in spec.categorical if c.name == "category")
    assert new_cat.vocab != old_cat.vocab
    model = build_model("dcn", spec, production.config)
    report = warm_start(model, production.run_dir)
    name = "embeddings.tables.category.weight"
    assert name in report.resized
    old = production.model.state_dict()[name]
    new = dict(model.named_parameters())[name]
    for token in new_cat.vocab:
        assert torch.equal(new[new_cat.vocab.index(token) + 2], old[old_cat.vocab.index(token) + 2])


def test_warm_start_across_kinds_loads_the_embeddings(production) -> None:
    model = build_model("wide_deep", production.spec, production.config)
    report = warm_start(model, production.run_dir)
    assert {n for n in report.loaded if n.startswith("embeddings.")} == {
        f"embeddings.tables.{c.name}.weight" for c in production.spec.categorical
    }
    assert any(n.startswith("wide.") for n in report.initialised)
    assert any(n.startswith("cross.") for n in report.unused)


def test_warm_started_training_reports_and_starts_from_production(
    production, splits, tmp_path
) -> None:
    def run(name: str, warm: Path | None):
        return train_model(
            "dcn",
            splits.train,
            splits.valid,
            splits.schema,
            small_model_config({"training.max_epochs": 1, "training.learning_rate": 0.0005}),
            RunOptions(checkpoint_dir=tmp_path / name, warm_start_from=warm),
        )

    warm, cold = run("warm", production.run_dir), run("cold", None)
    assert warm.warm_start_report is not None and cold.warm_start_report is None
    assert warm.warm_start_report.initialised == {}
    assert warm.to_dict()["warm_start_report"]["source"].endswith("final")
    # One gentle epoch from the champion stays near the champion's logloss; from scratch it
    # has barely left the base rate.
    champion = min(h["valid_logloss"] for h in production.history)
    assert warm.history[0]["valid_logloss"] < champion + 0.002
    assert cold.history[0]["valid_logloss"] > champion + 0.005


def test_distillation_pulls_the_student_towards_the_teacher(production, splits, tmp_path) -> None:
    with pytest.raises(ValueError, match="needs warm_start_from"):
        train_model(
            "dcn",
            splits.train,
            splits.valid,
            splits.schema,
            small_model_config({"warm_start.distill_weight": 0.5}),
            RunOptions(checkpoint_dir=tmp_path / "x"),
        )
    teacher = Scorer.from_checkpoint(production.run_dir).predict_proba(splits.test)

    def student(weight: float) -> np.ndarray:
        result = train_model(
            "dcn",
            splits.train,
            splits.valid,
            splits.schema,
            small_model_config(
                {
                    "warm_start.distill_weight": weight,
                    # Moderate: at 0.02 Adam's normalised steps on the near-zero gradients
                    # of a student that starts at its teacher wander off (ratio ~0.5 on some
                    # CPUs); at 0.005 the ratio is ~0.2.
                    "training.learning_rate": 0.005,
                    "training.max_epochs": 3,
                    "training.patience": 10,
                }
            ),
            RunOptions(
                checkpoint_dir=tmp_path / f"student-{weight}", warm_start_from=production.run_dir
            ),
        )
        return Scorer.from_checkpoint(result.run_dir).predict_proba(splits.test)

    distance_labels = np.abs(student(0.0) - teacher).mean()
    distance_distilled = np.abs(student(1.0) - teacher).mean()
    assert distance_distilled < 0.5 * distance_labels


def test_learning_rate_scale_applies_to_warm_starts_only(production, splits, tmp_path) -> None:
    """``warm_start.learning_rate_scale`` lets a warm start move faster (to unlearn a drifted
    concept); a cold start with the same config trains exactly as without it."""

    def run(name: str, scale: float, warm: Path | None):
        overrides = {"training.max_epochs": 1, "warm_start.learning_rate_scale": scale}
        return train_model(
            "dcn",
            splits.train,
            splits.valid,
            splits.schema,
            small_model_config(overrides),
            RunOptions(checkpoint_dir=tmp_path / name, warm_start_from=warm),
        )

    def moved(result) -> float:  # distance of the weights from the champion's
        start = Scorer.from_checkpoint(production.run_dir).model.state_dict()
        end = Scorer.from_checkpoint(result.run_dir).model.state_dict()
        return float(sum(((end[k] - start[k]) ** 2).sum() for k in start if k in end) ** 0.5)

    slow, fast = run("warm-1", 1.0, production.run_dir), run("warm-4", 4.0, production.run_dir)
    assert moved(fast) > 1.5 * moved(slow)
    cold, cold_scaled = run("cold-1", 1.0, None), run("cold-4", 4.0, None)
    assert cold.history == cold_scaled.history


def _moved_window(splits):
    """A later window whose numeric statistics moved: a few dense columns doubled plus 3. The
    rows are the champion's own training rows, so every vocabulary is the champion's and only
    the scaling can differ."""
    later = splits.train.copy()
    moved = [n.name for n in FeatureSpec.fit(splits.schema, later, small_model_config()).numeric]
    for name in moved[:5]:
        later[name] = later[name] * 2 + 3
    return later, moved[:5]


def test_a_warm_start_keeps_the_numeric_scaling_so_it_starts_as_the_champion(
    production, splits
) -> None:
    later, moved = _moved_window(splits)
    champion = Scorer.from_checkpoint(production.run_dir).predict_proba(later)

    def start(keep: bool) -> tuple[FeatureSpec, np.ndarray]:
        source = production.spec if keep else None
        spec = FeatureSpec.fit(splits.schema, later, production.config, scaling_from=source)
        model = build_model("dcn", spec, production.config)
        warm_start(model, production.run_dir)
        return spec, Scorer(model=model.eval(), spec=spec, kind="dcn").predict_proba(later)

    kept_spec, kept = start(keep=True)
    refit_spec, refit = start(keep=False)
    # Kept: the champion's transform and weights, so the champion's scores on the new window.
    assert kept_spec.numeric == production.spec.numeric
    np.testing.assert_array_equal(kept, champion)
    # Refitted: the copied weights read shifted inputs, and the start is another model.
    assert {n.name for n in refit_spec.numeric if n not in production.spec.numeric} >= set(moved)
    assert np.abs(refit - champion).mean() > 10 * np.abs(kept - champion).mean() + 1e-4


def test_kept_scaling_needs_the_same_transform_and_follows_the_config(
    production, splits, tmp_path
) -> None:
    later, moved = _moved_window(splits)
    data = small_model_config().to_dict()
    data["features"]["numeric"][moved[0]]["log1p"] = not data["features"]["numeric"][moved[0]].get(
        "log1p", False
    )
    changed = parse_model_config(data)
    spec = FeatureSpec.fit(splits.schema, later, changed, scaling_from=production.spec)
    by_name = {n.name: n for n in spec.numeric}
    old = {n.name: n for n in production.spec.numeric}
    assert by_name[moved[0]] != old[moved[0]]  # another transform: refitted
    assert all(by_name[name] == old[name] for name in moved[1:])

    def run(name: str, keep: bool):
        overrides = {"training.max_epochs": 1, "warm_start.keep_scaling": keep}
        return train_model(
            "dcn",
            later,
            splits.valid,
            splits.schema,
            small_model_config(overrides),
            RunOptions(checkpoint_dir=tmp_path / name, warm_start_from=production.run_dir),
        )

    assert run("kept", True).spec.numeric == production.spec.numeric
    assert run("refit", False).spec.numeric != production.spec.numeric
