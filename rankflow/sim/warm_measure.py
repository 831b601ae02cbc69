"""Warm start, measured: a warm-started and a cold-started model at an equal training budget.

Issue #12 item 6. The canary's challenger starts from the champion's weights; whether that
pays is a measurement, not an assumption. :func:`measure_warm_start` trains, on the same fresh
training set, with the same config, the same seed and the same budget (epochs, early-stopping
rule), one model warm-started from the champion's checkpoint and one from a fresh
initialisation, and compares them: test AUC and logloss of each (the best weights of each
run), each run's best validation logloss, and the steps the warm start needs to reach the cold
start's best validation logloss. Goal (issue #12): at most a third of the cold start's steps
with no loss in test AUC.

The canary does not train the warm arm twice: it trains its challenger at the measurement's
cadence (:func:`measuring_overrides`), and the challenger, warm-started from the same champion
with the same config, seed and data, is the warm arm (:func:`challenger_as_warm_run`); only the
cold arm is an extra training.

Pure of MLflow: the caller logs :meth:`WarmStartComparison.to_metrics` (flat
``warm_start_*`` floats) on its run. Imports only ``models`` and ``rankflow.features``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from models.config import ModelConfig, TrainingConfig, load_model_config
from models.metrics import auc, logloss
from models.scoring import Scorer
from models.train import TrainResult, train_model
from rankflow.errors import RankflowError
from rankflow.features.training_set import LABEL, TrainingSet

log = logging.getLogger(__name__)

# "Steps to reach" is read off the validation history, so it is only as fine as the
# evaluations: at least this many per epoch (see _measuring_config).
MIN_EVALS_PER_EPOCH = 10
GOAL_STEPS_RATIO = 1 / 3  # issue #12: the cold start's best in at most a third of its steps
Arm = Literal["warm", "cold"]


class WarmMeasureError(RankflowError, ValueError):
    """The warm-start measurement cannot run on this input; the message says what is wrong."""


@dataclass(frozen=True)
class ArmResult:
    """One arm (warm or cold) of the comparison."""

    test_auc: float
    test_logloss: float
    best_valid_logloss: float
    best_step: int  # step of the lowest validation logloss (the weights tested, except
    # under the small-valid-split rule of models.train, which keeps the last weights)
    steps: int  # steps trained (early stopping may end an arm before the budget)
    first_valid_logloss: float  # at the first evaluation: how good the starting point is
    first_eval_step: int


@dataclass(frozen=True)
class FinishedRun:
    """A run trained elsewhere, used as an arm: its validation history and best checkpoint (the
    two things :func:`compare_runs` reads of a :class:`~models.train.TrainResult`)."""

    history: list[dict[str, float]]
    checkpoint_path: Path


@dataclass(frozen=True)
class WarmStartComparison:
    """Warm against cold at an equal budget; ``warm_steps_to_cold_best`` is None if never."""

    kind: str
    seed: int
    eval_every_steps: int  # the evaluation cadence both arms used
    steps_per_epoch: int
    warm: ArmResult
    cold: ArmResult
    # The cold start's best validation logloss plus training.min_delta: the trainer's own
    # notion of a real improvement, so a warm start 1e-5 above the cold best counts as there.
    target_valid_logloss: float
    cold_steps_to_best: int
    warm_steps_to_cold_best: int | None
    distill_weight: float  # of the warm arm (the cold arm has no teacher: always 0)
    # The warm arm is the canary's challenger itself (trained at the measuring cadence), not a
    # second warm-started training: the same config, seed and data, so the same run.
    warm_is_challenger: bool = False

    @property
    def steps_ratio(self) -> float:
        """warm steps to the cold best / cold steps to its best; inf if the warm never got there."""
        if self.warm_steps_to_cold_best is None:
            return math.inf
        return self.warm_steps_to_cold_best / max(self.cold_steps_to_best, 1)

    @property
    def test_auc_diff(self) -> float:
        """Warm minus cold test AUC (>= 0: no loss)."""
        return self.warm.test_auc - self.cold.test_auc

    @property
    def goal_met(self) -> bool:
        """Issue #12's goal: a third of the steps or fewer, and no loss in test AUC."""
        return self.steps_ratio <= GOAL_STEPS_RATIO and self.test_auc_diff >= 0

    def to_metrics(self) -> dict[str, float]:
        """Flat ``warm_start_*`` floats for MLflow. A never-reached target is reported as
        ``warm_start_reached_cold_best = 0`` and no steps / ratio keys (MLflow stores inf
        as a huge finite number, which would read as a real measurement)."""
        metrics: dict[str, float] = {}
        for arm, result in (("warm", self.warm), ("cold", self.cold)):
            for name, value in asdict(result).items():
                metrics[f"warm_start_{arm}_{name}"] = float(value)
        metrics |= {
            "warm_start_test_auc_diff": self.test_auc_diff,
            "warm_start_test_logloss_diff": self.warm.test_logloss - self.cold.test_logloss,
            "warm_start_target_valid_logloss": self.target_valid_logloss,
            "warm_start_cold_steps_to_best": float(self.cold_steps_to_best),
            "warm_start_reached_cold_best": float(self.warm_steps_to_cold_best is not None),
            "warm_start_eval_every_steps": float(self.eval_every_steps),
            "warm_start_distill_weight": self.distill_weight,
            "warm_start_goal_met": float(self.goal_met),
            "warm_start_warm_is_challenger": float(self.warm_is_challenger),
        }
        if self.warm_steps_to_cold_best is not None:
            metrics["warm_start_steps_to_cold_best"] = float(self.warm_steps_to_cold_best)
            metrics["warm_start_steps_ratio"] = self.steps_ratio
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (inf ratio as None)."""
        data = asdict(self)
        data["steps_ratio"] = None if math.isinf(self.steps_ratio) else self.steps_ratio
        data["test_auc_diff"] = self.test_auc_diff
        data["goal_met"] = self.goal_met
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WarmStartComparison:
        """The inverse of :meth:`to_dict` (its derived keys are recomputed, not read)."""
        own = {f.name: data[f.name] for f in fields(cls)}
        own["warm"], own["cold"] = ArmResult(**data["warm"]), ArmResult(**data["cold"])
        return cls(**own)

    def summary(self) -> str:
        """Two lines for logs and the canary report."""
        reached = (
            f"{self.warm_steps_to_cold_best} steps vs {self.cold_steps_to_best} "
            f"(ratio {self.steps_ratio:.2f}, goal <= {GOAL_STEPS_RATIO:.2f})"
            if self.warm_steps_to_cold_best is not None
            else f"never within {self.warm.steps} steps (cold: {self.cold_steps_to_best})"
        )
        warm = "the challenger" if self.warm_is_challenger else "warm start"
        return (
            f"{warm} ({self.kind}, seed {self.seed}): reaches the cold best valid logloss "
            f"{self.target_valid_logloss:.5f} in {reached}; goal "
            f"{'met' if self.goal_met else 'missed'}\n"
            f"  test AUC warm {self.warm.test_auc:.4f} cold {self.cold.test_auc:.4f} "
            f"({self.test_auc_diff:+.4f}); test logloss warm {self.warm.test_logloss:.5f} "
            f"cold {self.cold.test_logloss:.5f}"
        )


def measure_warm_start(
    kind: Literal["wide_deep", "dcn"],
    training_set: TrainingSet,
    model_config: ModelConfig,
    champion_checkpoint: Path,
    scratch: Path,
    *,
    seed: int = 0,
    warm_run: FinishedRun | None = None,
) -> WarmStartComparison:
    """Train a warm-started (from ``champion_checkpoint``) and a cold-started ``kind`` model on
    ``training_set`` at an equal budget and compare them.

    Equal budget: the same config (epochs, batch size, learning rate, early-stopping rule),
    the same seed and the same data; the only differences are the initial weights and, if
    ``warm_start.distill_weight`` > 0, the warm arm's soft targets (the cold arm has no
    teacher, so it trains with weight 0; a cold start distilling the champion would not be
    cold). Each arm stops by the config's own rule, so their step counts may differ.

    The evaluation cadence may be overridden, equally for both arms: if the config evaluates
    fewer than ``MIN_EVALS_PER_EPOCH`` times per epoch, both evaluate every
    ``ceil(steps_per_epoch / MIN_EVALS_PER_EPOCH)`` steps, and an early-stopping patience
    counted in evaluations is converted to the same length in epochs (``patience_epochs``),
    so the finer cadence does not stop a run sooner. The cadence used is on the result.

    ``scratch``: a folder for the two runs' checkpoints (``warm/``, ``cold/``; replaced, not
    resumed); the caller owns it and may delete it afterwards. ``champion_checkpoint``: a
    checkpoint folder or a training run folder (its best checkpoint).

    ``warm_run``: the warm arm, already trained (the canary's challenger: warm-started from
    ``champion_checkpoint`` with the measuring config, seed and data, which is exactly what this
    function would train; :func:`challenger_as_warm_run` checks that), so only the cold arm
    is trained.
    """
    _check_inputs(training_set, champion_checkpoint)
    config = _measuring_config(model_config, len(training_set.train))
    runs: dict[Arm, TrainResult | FinishedRun] = {}
    if warm_run is not None:
        runs["warm"] = warm_run
    for arm in ("warm", "cold"):
        if arm in runs:
            continue
        arm_config = config if arm == "warm" else _without_distillation(config)
        runs[arm] = train_model(
            kind,
            training_set.train,
            training_set.valid,
            dict(training_set.feature_types),
            arm_config,
            checkpoint_dir=Path(scratch) / arm,
            warm_start_from=Path(champion_checkpoint) if arm == "warm" else None,
            resume=False,
            seed=seed,
        )
    return compare_runs(
        kind,
        runs["warm"],
        runs["cold"],
        training_set.test,
        seed=seed,
        eval_every_steps=_eval_every(config.training, len(training_set.train)),
        steps_per_epoch=math.ceil(len(training_set.train) / config.training.batch_size),
        min_delta=config.training.min_delta,
        distill_weight=config.warm_start.distill_weight,
        warm_is_challenger=warm_run is not None,
    )


def measuring_overrides(model_config: ModelConfig, train_rows: int) -> dict[str, Any]:
    """The dotted overrides that give ``model_config`` the measuring cadence (empty if it has
    it). The canary trains its challenger with them, so that the challenger's own run can be
    the warm arm (:func:`challenger_as_warm_run`) and only the cold arm is trained again."""
    measuring = _measuring_config(model_config, train_rows).training
    current = model_config.training
    return {
        f"training.{name}": getattr(measuring, name)
        for name in ("eval_every_epochs", "eval_every_steps", "patience_epochs")
        if getattr(measuring, name) != getattr(current, name)
    }


def measuring_overrides_of(
    model_config_path: Path, overrides: dict[str, Any], train_rows: int
) -> dict[str, Any]:
    """:func:`measuring_overrides` of the model config at ``model_config_path`` with
    ``overrides`` applied (what the canary trains its challenger with)."""
    return measuring_overrides(load_model_config(model_config_path, overrides), train_rows)


def challenger_as_warm_run(
    challenger_checkpoint: Path, kind: str, model_config: ModelConfig, train_rows: int
) -> tuple[FinishedRun | None, str]:
    """The challenger's own run as the warm arm, if it is the run the measurement would train:
    a finished run of ``kind`` whose saved config equals the measuring config (so the same
    cadence, budget and early-stopping rule as the cold arm) and whose checkpoint carries its
    validation history. Otherwise None and why (e.g. a version registered before the
    measurement was on, or fetched from the registry without its trainer state); the caller
    then trains the warm arm as well. The data, seed and warm-start source are the caller's to
    match (the canary passes the challenger's own training set; its fingerprint has the
    champion in it)."""
    try:
        checkpoint = load_checkpoint(Path(challenger_checkpoint), expect_kind=kind)
    except CheckpointError as error:
        return None, f"its checkpoint does not load ({error})"
    wanted = _measuring_config(model_config, train_rows)
    if checkpoint.config.to_dict() != wanted.to_dict():
        return None, "it was trained with another config than the measurement's"
    state = checkpoint.trainer_state or {}
    history = state.get("history")
    if not state.get("finished") or not isinstance(history, list) or not history:
        return None, "its checkpoint has no finished run's validation history"
    return FinishedRun(history=history, checkpoint_path=checkpoint.path), ""


def measurement_key(challenger_fingerprint: str, seed: int) -> str:
    """What decides a measurement, hashed: the challenger's training fingerprint (training
    data, model config, model code and the warm-start source, i.e. the champion), the seed, and
    this module's code (the measuring cadence and the comparison)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (challenger_fingerprint, str(seed), Path(__file__).read_text()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def measure_warm_start_cached(
    cache_dir: Path,
    key: str,
    kind: Literal["wide_deep", "dcn"],
    training_set: TrainingSet,
    model_config: ModelConfig,
    champion_checkpoint: Path,
    scratch: Path,
    *,
    seed: int = 0,
    challenger_checkpoint: Path | None = None,
) -> tuple[WarmStartComparison, bool]:
    """:func:`measure_warm_start`, or the stored result of the identical measurement (``key``:
    :func:`measurement_key`); the flag says which. Training is deterministic for a seed, so the
    same inputs give the same figures: a canary that re-proposes a challenger (two canaries
    racing, a retry) costs no second pair of trainings. The caller serializes callers of one
    state (the training lock); an unreadable entry is measured again and replaced."""
    path = Path(cache_dir) / f"{key}.json"
    if path.is_file():
        try:
            return WarmStartComparison.from_dict(json.loads(path.read_text())), True
        except (ValueError, KeyError, TypeError):
            pass  # damaged or from an older layout: measure again
    warm_run = None
    if challenger_checkpoint is not None:
        warm_run, why_not = challenger_as_warm_run(
            challenger_checkpoint, kind, model_config, len(training_set.train)
        )
        if warm_run is None:
            log.info("warm-vs-cold: the challenger is not the warm arm (%s): training it", why_not)
    comparison = measure_warm_start(
        kind,
        training_set,
        model_config,
        champion_checkpoint,
        scratch,
        seed=seed,
        warm_run=warm_run,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(comparison.to_dict(), indent=1))
    os.replace(partial, path)  # a reader never sees half a file
    return comparison, False


def compare_runs(
    kind: str,
    warm: TrainResult | FinishedRun,
    cold: TrainResult | FinishedRun,
    test: pd.DataFrame,
    *,
    seed: int,
    eval_every_steps: int,
    steps_per_epoch: int,
    min_delta: float,
    distill_weight: float,
    warm_is_challenger: bool = False,
) -> WarmStartComparison:
    """The comparison of two finished runs: test metrics of each run's best weights, and the
    first warm evaluation at or below the cold best (+ ``min_delta``) from the histories."""
    if not warm.history or not cold.history:
        raise WarmMeasureError("a run has no validation history: nothing to compare")
    cold_best = min(cold.history, key=lambda h: h["valid_logloss"])
    target = cold_best["valid_logloss"] + min_delta
    reached = [int(h["step"]) for h in warm.history if h["valid_logloss"] <= target]
    return WarmStartComparison(
        kind=kind,
        seed=seed,
        eval_every_steps=eval_every_steps,
        steps_per_epoch=steps_per_epoch,
        warm=_arm_result(warm, test),
        cold=_arm_result(cold, test),
        target_valid_logloss=target,
        cold_steps_to_best=int(cold_best["step"]),
        warm_steps_to_cold_best=reached[0] if reached else None,
        distill_weight=distill_weight,
        warm_is_challenger=warm_is_challenger,
    )


def _arm_result(run: TrainResult | FinishedRun, test: pd.DataFrame) -> ArmResult:
    probs = Scorer.from_checkpoint(run.checkpoint_path).predict_proba(test)
    y = test[LABEL].to_numpy(dtype=np.float64)
    best = min(run.history, key=lambda h: h["valid_logloss"])
    first = run.history[0]
    return ArmResult(
        test_auc=auc(y, probs),
        test_logloss=logloss(y, probs),
        best_valid_logloss=float(best["valid_logloss"]),
        best_step=int(best["step"]),
        steps=int(run.history[-1]["step"]),
        first_valid_logloss=float(first["valid_logloss"]),
        first_eval_step=int(first["step"]),
    )


def _check_inputs(training_set: TrainingSet, champion_checkpoint: Path) -> None:
    for name in ("train", "valid", "test"):
        frame = training_set.split(name)  # type: ignore[arg-type]
        if len(frame) == 0:
            raise WarmMeasureError(f"warm-start measurement: the {name} split is empty")
        if LABEL not in frame.columns:
            raise WarmMeasureError(
                f"warm-start measurement: the {name} split has no {LABEL!r} column"
            )
    try:
        resolve_checkpoint(Path(champion_checkpoint))
    except CheckpointError as error:
        raise WarmMeasureError(f"warm-start measurement: champion checkpoint: {error}") from None


def _eval_every(tc: TrainingConfig, train_rows: int) -> int:
    """The evaluation interval in steps that models.train uses for this config."""
    steps_per_epoch = math.ceil(train_rows / tc.batch_size)
    if tc.eval_every_epochs is not None:
        return max(1, round(tc.eval_every_epochs * steps_per_epoch))
    return tc.eval_every_steps or steps_per_epoch


def _measuring_config(config: ModelConfig, train_rows: int) -> ModelConfig:
    """``config`` with an evaluation cadence fine enough to read "steps to reach" off the
    histories (see measure_warm_start); unchanged if it already is."""
    tc = config.training
    steps_per_epoch = math.ceil(train_rows / tc.batch_size)
    current = _eval_every(tc, train_rows)
    wanted = max(1, math.ceil(steps_per_epoch / MIN_EVALS_PER_EPOCH))
    if current <= wanted:
        return config
    overrides: dict[str, Any] = {
        "training.eval_every_epochs": None,
        "training.eval_every_steps": wanted,
    }
    if tc.patience_epochs is None:
        overrides["training.patience_epochs"] = max(tc.patience, 1) * current / steps_per_epoch
    return config.with_overrides(overrides)


def _without_distillation(config: ModelConfig) -> ModelConfig:
    if config.warm_start.distill_weight == 0:
        return config
    return config.with_overrides({"warm_start.distill_weight": 0.0})
