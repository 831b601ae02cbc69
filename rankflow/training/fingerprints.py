"""Fingerprints: what decides a trained model, hashed, so an identical re-run is recognised.

A model's fingerprint covers its family, the training set's contents, the model config (bar
the progress bar) and the code that trains and logs it. A family version tagged with the same
fingerprint is reused instead of trained again; a new fingerprint trains a new version.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from rankflow.paths import REPO_ROOT

if TYPE_CHECKING:
    from models.config import ModelConfig
    from rankflow.features.training_set import TrainingSet

# Code whose change may change a trained model, its metrics or its logged form (hashed into
# the fingerprint): the model package, this step, the pyfunc logging code and the wrapper
# that ships inside every logged model. The training set's contents are hashed separately.
CODE_PATHS = (
    "models",
    "rankflow/training",
    "rankflow/tracking/pyfunc.py",
    "rankflow/tracking/ctr_wrapper.py",
)


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def data_fingerprint(training_set: TrainingSet) -> str:
    """Hash of the training set: every split's columns, dtypes and values, and its schema."""
    from rankflow.features.training_set import SPLITS

    meta = {
        "feature_service": training_set.feature_service,
        "feature_types": dict(training_set.feature_types),
        "window": str(training_set.window),
        "splits": {name: str(w) for name, w in training_set.split_windows.items()},
    }
    parts = [json.dumps(meta, sort_keys=True).encode()]
    for name in SPLITS:
        frame = training_set.split(name)
        parts.append(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
        parts.append(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return _digest(*parts)


def code_fingerprint(code_paths: tuple[str, ...] = CODE_PATHS) -> str:
    """Hash of the Python sources that make and log a model (committed or not).

    ``models/``, the training package, the pyfunc logging code and wrapper: editing the CLI
    or a flow does not make an identical re-run train again, editing the training loop or
    the metrics does.
    """
    parts = []
    for entry in code_paths:
        path = REPO_ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            parts.append(str(file.relative_to(REPO_ROOT)).encode())
            parts.append(file.read_bytes())
    return _digest(*parts)


def model_fingerprint(
    kind: str,
    data_fp: str,
    code_fp: str,
    model_config: ModelConfig,
    warm_from: str | None = None,
) -> str:
    """What decides a trained model: family, data, model config (bar the progress bar), code,
    and the fingerprint of the model it was warm-started from (None: a cold start, whose
    fingerprint is unchanged by this argument's existence)."""
    config = {k: v for k, v in model_config.flat().items() if k != "training.progress"}
    parts: dict[str, Any] = {"kind": kind, "data": data_fp, "code": code_fp, "config": config}
    if warm_from is not None:
        parts["warm_from"] = warm_from
    blob = json.dumps(
        parts,
        sort_keys=True,
        default=str,
    )
    return _digest(blob.encode())
