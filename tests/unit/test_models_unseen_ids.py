"""Unseen ids are unknown, not noise: a never-seen user scores exactly like
the shared unseen row, which starts at zero and is trained by rare train users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoding import OOV_ID
from models.hashing import bucket_of
from models.networks import build_model
from models.scoring import Scorer
from models.spec import FeatureSpec
from models.train import RunOptions, train_model
from tests.fixtures.synthetic import make_splits, small_model_config

RARE = {"features.categorical.user_id.min_count": 3}


pytestmark = pytest.mark.usefixtures("private_home")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits():
    return make_splits(3000, seed=5)


@pytest.mark.parametrize("kind", ["wide_deep", "dcn"])
def test_a_never_seen_user_scores_as_the_unseen_row(splits, tmp_path: Path, kind: str) -> None:
    result = train_model(
        kind,
        splits.train,
        splits.valid,
        splits.schema,
        small_model_config(RARE),
        RunOptions(checkpoint_dir=tmp_path / kind),
    )
    user = next(c for c in result.spec.categorical if c.name == "user_id")
    trained = set(user.trained_buckets or ())
    counts = splits.train["user_id"].value_counts()
    # In train, but too rarely for an own row (and no frequent user shares its hash bucket).
    rare = next(
        int(v) for v in counts[counts < 3].index if bucket_of(str(v), 997, "user_id") not in trained
    )
    never = next(
        v for v in range(10**6, 10**6 + 10_000) if bucket_of(str(v), 997, "user_id") not in trained
    )
    rows = splits.test.iloc[:50]
    scorer = Scorer.from_checkpoint(result.checkpoint_path)
    as_never = scorer.predict_logits(rows.assign(user_id=never))
    as_rare = scorer.predict_logits(rows.assign(user_id=rare))
    ids = result.spec.transform(rows.assign(user_id=never)).sparse
    assert (ids[:, result.spec.categorical.index(user)] == OOV_ID).all()
    np.testing.assert_array_equal(as_never, as_rare)
    # The unseen row was trained by the rare users (it moved from its zero start), and
    # scoring a known user differs from scoring the unknown one.
    row = result.model.embeddings.tables["user_id"].weight[OOV_ID]
    assert float(row.abs().max()) > 1e-3
    known = int(counts.index[0])
    assert not np.array_equal(scorer.predict_logits(rows.assign(user_id=known)), as_never)


def test_the_unseen_row_starts_at_zero_and_init_std_sets_the_rest(splits) -> None:
    config = small_model_config()
    spec = FeatureSpec.fit(splits.schema, splits.train, config)
    torch.manual_seed(0)
    model = build_model("dcn", spec, config)
    for name, table in model.embeddings.tables.items():
        assert torch.count_nonzero(table.weight[OOV_ID]) == 0, name  # vocab and hash alike
    unit = model.embeddings.tables["user_id"].weight.detach()
    assert float(unit[2:].std()) == pytest.approx(1 / np.sqrt(8), rel=0.1)
    near_zero = (
        build_model("dcn", spec, config.with_overrides({"dcn.embedding_init_std": 1e-4}))
        .embeddings.tables["user_id"]
        .weight
    )
    assert float(near_zero.detach().std()) < 1e-3
