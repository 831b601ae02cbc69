"""The pyfunc wrapper that ships inside every logged rankflow model (and nothing of rankflow).

Scoring a logged model runs this file (as the model's model-from-code file, with a
``set_model`` line appended by :mod:`rankflow.tracking.pyfunc`) and imports the ``models``
package copied into the model as code, plus the pinned requirements: never ``rankflow``, so a
scoring service or a notebook loads ``models:/rankflow-ctr@champion`` without the training
code installed. Keep its imports to mlflow, numpy, pandas and (lazily) ``models``: a test
loads a logged model in a process where importing rankflow fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from models.scoring import Scorer

CHECKPOINT_ARTIFACT = "checkpoint"


class RankflowCTRModel(mlflow.pyfunc.PythonModel):
    """Scores raw feature rows with the checkpoint in the model's ``checkpoint`` artifact."""

    def __init__(self) -> None:
        self._scorer: Scorer | None = None

    def load_context(self, context: Any) -> None:
        from models.scoring import Scorer

        # Batch size: the checkpoint's training.eval_batch_size.
        self._scorer = Scorer.from_checkpoint(Path(context.artifacts[CHECKPOINT_ARTIFACT]))

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            raise RuntimeError("RankflowCTRModel: load_context() has not run")
        return self._scorer

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        # A DataFrame hint: MLflow validates input against the logged signature, not the hint.
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return np.asarray(self.scorer.predict_proba(frame), dtype=np.float64)
