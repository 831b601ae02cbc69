"""Score raw feature rows with a checkpoint: the spec turns them into tensors, the model scores.

Used by the MLflow pyfunc wrapper and the online scoring service: a ``Scorer`` needs nothing
but the checkpoint folder (weights, spec and config are all in it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.checkpoint import load_checkpoint, resolve_checkpoint
from models.networks import RankingModel, predict_logits
from models.spec import FeatureSpec

DEFAULT_BATCH_SIZE = 16384


@dataclass
class Scorer:
    model: RankingModel
    spec: FeatureSpec
    kind: str
    path: Path | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_checkpoint(cls, path: Path | str, *, batch_size: int | None = None) -> Scorer:
        """A checkpoint directory, or a training folder (its best checkpoint).

        ``batch_size``: rows per forward pass; default the checkpoint's
        ``training.eval_batch_size``, the size the model was validated with during training.
        """
        checkpoint = load_checkpoint(Path(path))
        return cls(
            model=checkpoint.model.eval(),
            spec=checkpoint.spec,
            kind=checkpoint.kind,
            path=resolve_checkpoint(Path(path)),
            batch_size=batch_size or checkpoint.config.training.eval_batch_size,
        )

    def predict_logits(self, raw_df: pd.DataFrame) -> np.ndarray:
        tensors = self.spec.transform(raw_df)
        return predict_logits(self.model, tensors, self.batch_size).double().numpy()

    def predict_proba(self, raw_df: pd.DataFrame) -> np.ndarray:
        """P(click) per row, float64 [N]; columns beyond the spec's inputs are ignored."""
        return torch.sigmoid(torch.from_numpy(self.predict_logits(raw_df))).numpy()
