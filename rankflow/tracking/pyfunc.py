"""The MLflow pyfunc form of a rankflow model: raw feature-service rows in, click probabilities out.

The logged model holds the rankflow checkpoint directory as its only artifact (safetensors
state_dict, the fitted feature spec, the model config: all a ``Scorer`` needs, and what a
warm start reads), the ``models`` package as code, and as its model-from-code file the
wrapper :mod:`rankflow.tracking.ctr_wrapper` plus the ``set_model`` line that builds
:class:`RankflowCTRModel`. Nothing of the ``rankflow`` package ships or is imported at scoring
time, and nothing is pickled, so it loads in any process that has the pinned requirements::

    model = mlflow.pyfunc.load_model("models:/rankflow-ctr@champion")
    p_click = model.predict(feature_rows)          # numpy float64, one per row

``feature_rows`` is what the feature service returns plus the request columns (``user_id``,
``item_id``, ``category``, ``position``, ``device``, ``hour_of_day``, ``day_of_week``); extra
columns are ignored. The signature declares every numeric feature as an optional double, so
nulls (a new user without stats) and integer columns both pass MLflow's schema check; the
spec fills nulls as it did in training. :func:`checkpoint_of` finds the checkpoint inside a
downloaded model, for warm-starting the next model from a registered one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from rankflow.paths import REPO_ROOT
from rankflow.settings import apply_process_defaults
from rankflow.tracking import ctr_wrapper
from rankflow.tracking.ctr_wrapper import CHECKPOINT_ARTIFACT, RankflowCTRModel
from rankflow.tracking.setup import TrackingError

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.models.signature import ModelSignature

    from models.spec import FeatureSpec

OUTPUT_COLUMN = "p_click"
# Code copied into the logged model (code_paths): the model package. The wrapper travels as
# the model-from-code file. Scoring imports nothing else of the repo.
CODE_PACKAGES = ("models",)
WRAPPER_FILE = Path(ctr_wrapper.__file__)
MODEL_CODE_FILE = "rankflow_ctr_model.py"
# Distributions the scoring path imports (models.scoring -> checkpoint, spec, networks, config;
# the wrapper), pinned to the versions installed here. Explicit, because inferring them costs
# MLflow 30-40 s per model.
REQUIRED_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "safetensors",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "PyYAML",
    "cloudpickle",
)

# The MLmodel metadata key of the feature service a model was trained on (what a scoring
# service checks against the one it serves).
FEATURE_SERVICE_KEY = "rankflow_feature_service"

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "FEATURE_SERVICE_KEY",
    "RankflowCTRModel",
    "artifact_digest",
    "checkpoint_of",
    "log_pyfunc_model",
    "recorded_feature_service",
]


# --------------------------------------------------------------------------------------------
# Signature, requirements, code
# --------------------------------------------------------------------------------------------


def _mlflow_type(name: str, value_type: str, categorical: bool) -> tuple[str, bool]:
    """(MLflow column type, required) of a raw input column."""
    from models.hashing import value_kind
    from models.spec import ENTITY_SCHEMA

    kind = value_kind(value_type)
    if kind == "string":
        return "string", False
    if kind == "bool":
        return "boolean", False
    if kind == "int" and categorical and name in ENTITY_SCHEMA:
        return "long", True  # request / join-key columns: always present, never null
    # Numeric features (and any other integer column) as optional doubles: a null count
    # arrives as NaN in a float column, which MLflow would refuse for a 'long'.
    return "double", False


def input_columns(spec: FeatureSpec) -> dict[str, tuple[str, bool]]:
    """Raw column -> (MLflow type, required), in the order the spec reads them."""
    categorical = {c.name: c.value_type for c in spec.categorical}
    numeric = {n.name: n.value_type for n in spec.numeric}
    crossed = {
        name: value_type
        for cross in spec.crosses
        for name, value_type in zip(cross.features, cross.value_types, strict=True)
    }
    out: dict[str, tuple[str, bool]] = {}
    for name in spec.input_columns:
        if name in numeric:
            out[name] = _mlflow_type(name, numeric[name], categorical=False)
        else:
            value_type = categorical.get(name) or crossed[name]
            out[name] = _mlflow_type(name, value_type, categorical=True)
    return out


def model_signature(spec: FeatureSpec) -> ModelSignature:
    """Input: one column per raw input of the spec; output: a float64 vector of P(click)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs = Schema(
        [
            ColSpec(dtype, name, required=required)
            for name, (dtype, required) in input_columns(spec).items()
        ]
    )
    outputs = Schema([TensorSpec(np.dtype(np.float64), (-1,), OUTPUT_COLUMN)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(spec: FeatureSpec, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first ``rows`` rows of ``frame``, only the spec's inputs, typed as the signature says."""
    columns = input_columns(spec)
    example = frame.loc[:, list(columns)].head(rows).reset_index(drop=True)
    for name, (dtype, _) in columns.items():
        if dtype == "double":
            example[name] = pd.to_numeric(example[name]).astype("float64")
        elif dtype == "long":
            example[name] = example[name].astype("int64")
        elif dtype == "string":
            example[name] = example[name].astype(object).where(example[name].notna(), None)
    return example


def pip_requirements() -> list[str]:
    """``name==version`` of the scoring path's distributions as installed here (no local tag)."""
    out = []
    for name in REQUIRED_DISTRIBUTIONS:
        version = importlib.metadata.version(name).split("+", 1)[0]
        out.append(f"{name}=={version}")
    return out


def _stage_code(folder: Path) -> list[str]:
    """Copy the code packages (sources only, no caches) into ``folder``; their paths."""
    staged = []
    for package in CODE_PACKAGES:
        target = folder / package
        shutil.copytree(
            REPO_ROOT / package,
            target,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*"),
        )
        staged.append(str(target))
    return staged


def _write_model_code(file: Path) -> Path:
    """The wrapper's source plus the ``set_model`` call MLflow's model-from-code expects.

    Self-contained (MLflow also executes it while logging, before code paths are importable),
    and importing :mod:`rankflow.tracking.ctr_wrapper` itself stays free of that side effect.
    """
    source = WRAPPER_FILE.read_text()
    file.write_text(source.rstrip() + "\n\n\nmlflow.models.set_model(RankflowCTRModel())\n")
    return file


# --------------------------------------------------------------------------------------------
# Logging and loading
# --------------------------------------------------------------------------------------------


def log_pyfunc_model(
    checkpoint: Path,
    *,
    feature_service: str,
    example_frame: pd.DataFrame,
    name: str = "model",
    example_rows: int = 5,
    metadata: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log ``checkpoint`` (a checkpoint directory or a training folder) as a pyfunc model.

    Call inside an active MLflow run. ``feature_service``: the feature service the model was
    trained on, recorded in the model's metadata (:data:`FEATURE_SERVICE_KEY`) so that a
    scoring service can refuse a model trained on another. ``example_frame``: raw rows (e.g.
    the test split) whose first ``example_rows`` rows become the input example. Returns MLflow's
    ``ModelInfo`` (``model_uri`` is ``models:/<model_id>``), which the registry step registers.
    """
    from models.checkpoint import resolve_checkpoint
    from models.scoring import Scorer

    checkpoint = resolve_checkpoint(Path(checkpoint))
    scorer = Scorer.from_checkpoint(checkpoint)
    signature = model_signature(scorer.spec)
    example = input_example(scorer.spec, example_frame, example_rows)
    apply_process_defaults()  # no per-file artifact progress bars in flow and CI logs
    with tempfile.TemporaryDirectory(prefix="rankflow-pyfunc-") as tmp:
        folder = Path(tmp)
        code_paths = _stage_code(folder / "code")
        model_code = _write_model_code(folder / MODEL_CODE_FILE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            code_paths=code_paths,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata={
                "rankflow_kind": scorer.kind,
                FEATURE_SERVICE_KEY: feature_service,
                **dict(metadata or {}),
            },
            tags=dict(tags or {}),
        )


def checkpoint_of(model_uri: str, dst: Path | None = None) -> Path:
    """Download a logged rankflow model's checkpoint (``models:/name@alias`` etc.); its path.

    The result is a checkpoint directory that ``Scorer.from_checkpoint`` and
    ``train_model(..., warm_start_from=...)`` read.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    apply_process_defaults()  # no per-file download progress bars
    local = Path(download_artifacts(artifact_uri=model_uri, dst_path=str(dst) if dst else None))
    flavor = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT) or {}
    path = local / entry["path"] if "path" in entry else None
    if path is None or not path.is_dir():
        raise TrackingError(
            f"{model_uri}: no {CHECKPOINT_ARTIFACT!r} artifact in {local}: not a rankflow model"
        )
    return path


def artifact_digest(model_uri: str) -> str:
    """A short digest of a logged rankflow model's content, read without its weights: its
    MLmodel file and its checkpoint's manifest, which holds the sha256 of every checkpoint file.
    An artifact repaired or replaced under the same location gets another digest.

    ``model_uri``: the model's artifact location (not ``models:/...``, see ``checkpoint_of``).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from models.checkpoint import MANIFEST

    apply_process_defaults()
    base = model_uri.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="rankflow-digest-") as tmp:
        mlmodel = Path(download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=tmp))
        flavor = Model.load(str(mlmodel)).flavors.get("python_function", {})
        entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT) or {}
        if "path" not in entry:
            raise TrackingError(
                f"{model_uri}: no {CHECKPOINT_ARTIFACT!r} artifact: not a rankflow model"
            )
        manifest = Path(
            download_artifacts(artifact_uri=f"{base}/{entry['path']}/{MANIFEST}", dst_path=tmp)
        )
        digest = hashlib.sha256(mlmodel.read_bytes() + b"\0" + manifest.read_bytes())
    return digest.hexdigest()[:16]


def recorded_feature_service(downloaded: Path) -> str | None:
    """The feature service a downloaded rankflow model was trained on (its MLmodel metadata),
    None if it records none. ``downloaded``: the folder the model was downloaded into (its
    ``MLmodel`` file is found below it)."""
    from mlflow.models import Model

    found = sorted(Path(downloaded).rglob("MLmodel"))
    if not found:
        raise TrackingError(f"{downloaded}: no MLmodel file: not a downloaded MLflow model")
    metadata = Model.load(str(found[0])).metadata or {}
    value = metadata.get(FEATURE_SERVICE_KEY)
    return str(value) if value else None
