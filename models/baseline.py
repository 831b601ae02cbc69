"""Logistic-regression baseline (scikit-learn) on the same feature spec and split.

Inputs are what the neural models see, as a sparse design matrix: one-hot ids of every
categorical feature (and, if ``baseline.use_crosses``, of the declared crosses) plus the
transformed dense columns. No learned interactions, so it is the floor the models must beat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from models.config import ModelConfig
from models.spec import FeatureSpec, FeatureTensors


@dataclass
class LogisticBaseline:
    spec: FeatureSpec
    model: LogisticRegression
    use_crosses: bool

    def design_matrix(self, tensors: FeatureTensors) -> sp.csr_matrix:
        return design_matrix(self.spec, tensors, use_crosses=self.use_crosses)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """P(click) per row of a raw feature frame, float64 [N]."""
        matrix = self.design_matrix(self.spec.transform(df))
        return self.model.predict_proba(matrix)[:, 1]


def design_matrix(
    spec: FeatureSpec, tensors: FeatureTensors, *, use_crosses: bool
) -> sp.csr_matrix:
    """[N, sum(cardinalities) + n_dense] sparse matrix: one-hot ids, then dense values."""
    id_blocks = [tensors.sparse.numpy()]
    sizes = [c.num_embeddings for c in spec.categorical]
    if use_crosses and spec.crosses:
        id_blocks.append(tensors.cross.numpy())
        sizes += [c.num_embeddings for c in spec.crosses]
    ids = np.concatenate(id_blocks, axis=1) if id_blocks else np.zeros((len(tensors), 0), int)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else []
    n, n_ids = ids.shape
    one_hot = sp.csr_matrix(
        (
            np.ones(n * n_ids, dtype=np.float64),
            (np.repeat(np.arange(n), n_ids), (ids + offsets).reshape(-1)),
        ),
        shape=(n, int(sum(sizes))),
    )
    dense = sp.csr_matrix(tensors.dense.numpy().astype(np.float64))
    return sp.hstack([one_hot, dense], format="csr")


def train_logistic_regression(
    train_df: pd.DataFrame,
    schema: Mapping[str, str],
    config: ModelConfig,
    *,
    spec: FeatureSpec | None = None,
    seed: int | None = None,
) -> LogisticBaseline:
    """Fit L2 logistic regression on ``train_df`` (spec fitted on it unless one is given)."""
    spec = spec or FeatureSpec.fit(schema, train_df, config)
    tensors = spec.transform(train_df, require_label=True)
    assert tensors.label is not None
    use_crosses = config.baseline.use_crosses
    model = LogisticRegression(
        C=config.baseline.C,
        max_iter=config.baseline.max_iter,
        solver="lbfgs",
        random_state=config.training.seed if seed is None else seed,
    )
    model.fit(design_matrix(spec, tensors, use_crosses=use_crosses), tensors.label.numpy())
    return LogisticBaseline(spec=spec, model=model, use_crosses=use_crosses)
