"""MLflow run helpers shared by the baseline run and the candidate runs.

:class:`StepContext` is what one train step knows (config, tracking target, training set,
fingerprints, lineage, the baseline's predictions); the helpers below turn it into MLflow runs
that look the same for every model: lineage and fingerprint tags, flattened configs as params,
batched metrics, ROC and calibration plots, and runs found again by fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.paths import StatePaths
from rankflow.registry.versions import TAG_FINGERPRINT, TAG_KIND
from rankflow.tracking.setup import Tracking
from rankflow.training.evaluation import save_plots

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

    from models.config import ModelConfig
    from rankflow.config import TrainStepConfig
    from rankflow.features.training_set import TrainingSet

log = logging.getLogger(__name__)

TEST_PREFIX = "test_"
TAG_MODEL_URI = "rankflow.model_uri"
TAG_STATUS = "rankflow.status"
MAX_PARAM_LENGTH = 6000
ORACLE_CURVE = "oracle (true p_click)"


@dataclass(frozen=True)
class WarmSource:
    """The production model a candidate starts from (the canary's warm start).

    ``checkpoint``: its downloaded state_dict checkpoint; ``version`` / ``fingerprint``: the
    serving-model version it is and that version's fingerprint, which enters the candidate's
    own fingerprint (a warm-started model is a different model from a cold-started one).
    """

    checkpoint: Path
    version: str
    fingerprint: str

    def tags(self) -> dict[str, str]:
        return {
            "rankflow.warm_start.version": self.version,
            "rankflow.warm_start.fingerprint": self.fingerprint,
        }


@dataclass
class StepContext:
    """One train step's inputs and what its first model run computes for the others."""

    train: TrainStepConfig
    paths: StatePaths
    tracking: Tracking
    model_config: ModelConfig
    training_set: TrainingSet
    data_fp: str
    code_fp: str
    lineage: dict[str, str]
    scratch: Path
    truth: pd.Series | None = None
    baseline_probs: np.ndarray | None = None
    baseline_metrics: dict[str, float] | None = None
    baseline_run_id: str | None = None
    profile_file: Path | None = None
    config_files: list[Path] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)  # diagnostics.DataWarning
    warm_start: WarmSource | None = None  # start candidates from this model (the canary)

    def run_tags(self, kind: str, fingerprint: str, **extra: str) -> dict[str, str]:
        """Lineage, model kind and the fingerprints: what every run of the step is tagged."""
        return {
            **self.lineage,
            TAG_KIND: kind,
            TAG_FINGERPRINT: fingerprint,
            **extra,
            "rankflow.data_fingerprint": self.data_fp,
            "rankflow.code_fingerprint": self.code_fp,
        }


@contextlib.contextmanager
def start_run(
    ctx: StepContext, run_name: str, tags: Mapping[str, str], description: str
) -> Iterator[Any]:
    """An MLflow run in the step's experiment (nested under a caller's active run, if any)."""
    import mlflow

    with mlflow.start_run(
        experiment_id=ctx.tracking.experiment_id,
        run_name=run_name,
        tags=dict(tags),
        nested=mlflow.active_run() is not None,
        description=description,
    ) as run:
        yield run


def log_plots(ctx: StepContext, folder: Path, curves: dict[str, np.ndarray], title: str) -> None:
    """ROC and calibration plots of ``curves`` (plus the oracle's, on simulated data)."""
    import mlflow

    test = ctx.training_set.test
    if ctx.truth is not None:
        curves[ORACLE_CURVE] = ctx.truth.reindex(test["event_id"]).to_numpy()
    for plot in save_plots(
        folder,
        test["label"].to_numpy(),
        curves,
        title=title,
        bins=ctx.train.tracking.plot_bins,
    ):
        mlflow.log_artifact(str(plot), artifact_path="plots")


def run_params(pipeline: Mapping[str, Any], model_config: ModelConfig, kind: str) -> dict[str, str]:
    """Both configs flattened to dotted keys (``rankflow.*``, ``model.*``), values as text."""
    from models.yaml_config import flatten

    params = {"kind": kind}
    params.update({f"rankflow.{k}": param_value(v) for k, v in flatten(dict(pipeline)).items()})
    params.update({f"model.{k}": param_value(v) for k, v in model_config.flat().items()})
    return params


def param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def log_metrics(
    client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0
) -> None:
    """All of ``metrics`` at one step, in as few requests as the API allows."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    batch = [
        Metric(key=k, value=float(v), timestamp=stamp, step=step)
        for k, v in metrics.items()
        if v is not None
    ]
    _log_batch(client, run_id, batch)


def log_history(
    client: MlflowClient, run_id: str, history: list[dict[str, float]], per_epoch: bool
) -> None:
    """Training curves: step = epoch, or the optimizer step when evaluating every N steps."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    batch = []
    for entry in history:
        step = round(entry["epoch"]) if per_epoch else int(entry["step"])
        for key in ("train_loss", "valid_logloss", "valid_auc"):
            if key in entry:
                batch.append(Metric(key=key, value=float(entry[key]), timestamp=stamp, step=step))
    _log_batch(client, run_id, batch)


def _log_batch(client: MlflowClient, run_id: str, batch: list[Metric]) -> None:
    for start in range(0, len(batch), 500):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=batch[start : start + 500])


def runs_with(tracking: Tracking, fingerprint: str, status: str | None = None) -> list[Run]:
    filters = [f"tags.`{TAG_FINGERPRINT}` = '{fingerprint}'"]
    if status:
        filters.append(f"attributes.status = '{status}'")
    return list(
        tracking.client.search_runs(
            [tracking.experiment_id],
            filter_string=" and ".join(filters),
            order_by=["attributes.start_time DESC"],
        )
    )


def close_stale_runs(tracking: Tracking, fingerprint: str) -> None:
    """Runs of this fingerprint left RUNNING by a killed process: mark them FAILED."""
    for run in runs_with(tracking, fingerprint, "RUNNING"):
        log.warning("run %s was interrupted (still RUNNING); marking it FAILED", run.info.run_id)
        tracking.client.set_tag(run.info.run_id, TAG_STATUS, "interrupted")
        tracking.client.set_terminated(run.info.run_id, status="FAILED")


def finished_run(tracking: Tracking, fingerprint: str) -> Run | None:
    """A finished run of this fingerprint that logged its model (registration may be missing)."""
    for run in runs_with(tracking, fingerprint, "FINISHED"):
        if run.data.tags.get(TAG_MODEL_URI):
            return run
    return None


def run_test_metrics(run: Run) -> dict[str, float]:
    """A run's test-split metrics without their prefix (what the gates read)."""
    return {
        key.removeprefix(TEST_PREFIX): float(value)
        for key, value in run.data.metrics.items()
        if key.startswith(TEST_PREFIX)
    }
