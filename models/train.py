"""CPU training for Wide & Deep and DCN: fast, deterministic, resumable.

- Speed: the whole split is transformed to tensors once; each epoch gathers the shuffled rows
  once (``take``) and batches are contiguous views (``slice``), so there is no per-row
  Dataset and no DataLoader collation. Adam uses the fused CPU kernel.
- Determinism: the model is initialised after ``torch.manual_seed(seed)``; epoch e is shuffled
  by its own generator seeded from (seed, e); dropout draws from the global RNG, whose state is
  checkpointed. Same seed, data, config and thread count -> bit-identical weights.
- Early stopping on validation logloss (``patience`` evaluations without an improvement of at
  least ``min_delta``); the best weights are the result.
- Checkpoints every ``checkpoint_every_steps`` and at every evaluation hold the model,
  optimizer, RNG and loop state; a run killed at any point (kill -9) resumes from the last one
  and ends with exactly the metrics of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from models.checkpoint import (
    BEST_POINTER,
    LAST_POINTER,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_pointer,
    resolve_checkpoint,
    restore_optimizer,
)
from models.config import MODEL_KINDS, ModelConfig, TrainingConfig
from models.loop import (
    FINAL_CHECKPOINT,
    RNG_TENSOR,
    LoopData,
    LoopState,
    StepCallback,
    Trainee,
    TrainingLoop,
)
from models.networks import RankingModel, build_model
from models.scoring import Scorer
from models.spec import FeatureSpec, FeatureTensors
from models.warm_start import WarmStartReport, warm_start

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    kind: str
    model: RankingModel
    spec: FeatureSpec
    config: ModelConfig
    history: list[dict[str, float]]
    best_metrics: dict[str, float]
    best_step: int
    checkpoint_path: Path
    run_dir: Path
    warm_start_report: WarmStartReport | None
    resumed: bool
    stopped_early: bool
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no model)."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "history": self.history,
            "checkpoint_path": str(self.checkpoint_path),
            "run_dir": str(self.run_dir),
            "resumed": self.resumed,
            "stopped_early": self.stopped_early,
            "warm_start_report": (
                self.warm_start_report.to_dict() if self.warm_start_report else None
            ),
        }


def configure_threads(num_threads: int | None) -> int:
    """Intra-op threads (default min(2, cpus)); one inter-op thread: the graph is sequential."""
    threads = num_threads or min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    # Only settable before the first parallel work; harmless if it was set already.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return threads


@dataclass(frozen=True)
class RunOptions:
    """Where and how one training run goes (``train_model``'s ``run``).

    ``checkpoint_dir`` is the run's folder: with ``resume`` (default) a run found there
    continues where it stopped (or, if finished, is returned as is); ``resume=False`` discards
    it. ``warm_start_from``: a production checkpoint (or run folder) whose parameters
    initialise the model (see ``models.warm_start``) and, if ``warm_start.distill_weight`` >
    0, whose predictions are soft targets. ``seed``: default ``training.seed``.
    ``step_callback(step, loss)`` runs after each step.
    """

    checkpoint_dir: Path
    warm_start_from: Path | None = None
    resume: bool = True
    seed: int | None = None
    step_callback: StepCallback | None = None


def train_model(
    kind: Literal["wide_deep", "dcn"],
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    schema: Mapping[str, str],
    config: ModelConfig,
    run: RunOptions,
) -> TrainResult:
    """Train ``kind`` on ``train_df`` with early stopping on ``valid_df``; ``run`` says where
    the checkpoints go and how the run starts (see :class:`RunOptions`)."""
    _check_request(kind, config, run)
    seed = config.training.seed if run.seed is None else run.seed
    threads = configure_threads(config.training.num_threads)
    run_dir = Path(run.checkpoint_dir)
    last = _open_run_dir(run_dir, resume=run.resume)
    checkpoint, spec, model, state, report = _start_or_resume(
        kind, last, schema, train_df, config, seed, run.warm_start_from
    )
    train_t = spec.transform(train_df, require_label=True)
    valid_t = spec.transform(valid_df, require_label=True)
    identity = _identity(kind, seed, config, threads, train_t, valid_t, run.warm_start_from)
    if checkpoint is not None:
        _check_identity(state.identity, identity, checkpoint.path)
    else:
        state.identity = identity
    if not state.finished:
        distill = config.warm_start.distill_weight > 0
        soft = _teacher_targets(run.warm_start_from, train_df) if distill else None
        trainee = Trainee(kind, model, spec, config)
        optimizer = _training_optimizer(trainee, checkpoint, warm=run.warm_start_from is not None)
        data = LoopData(train_t, valid_t, soft)
        TrainingLoop(trainee, optimizer, data, run_dir, state, seed).run(run.step_callback)
    return _result(kind, run_dir, state, config, report, seed, resumed=checkpoint is not None)


def _check_request(kind: str, config: ModelConfig, run: RunOptions) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
    if config.warm_start.distill_weight > 0 and run.warm_start_from is None:
        raise ValueError(
            "warm_start.distill_weight > 0 needs warm_start_from: the production checkpoint "
            "whose predictions are the soft targets"
        )


def _open_run_dir(run_dir: Path, *, resume: bool) -> Path | None:
    """Create ``run_dir``, drop half-written files, and return the last checkpoint of a run
    to resume (None: a fresh run; with ``resume=False`` a previous run is discarded)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_partial_writes(run_dir)
    last = read_pointer(run_dir, LAST_POINTER)
    if last is not None and not resume:
        log.info("resume=False: discarding the previous run in %s", run_dir)
        _clear_run(run_dir)
        return None
    return last


def _start_or_resume(
    kind: str,
    last: Path | None,
    schema: Mapping[str, str],
    train_df: pd.DataFrame,
    config: ModelConfig,
    seed: int,
    warm_start_from: Path | None,
) -> tuple[Checkpoint | None, FeatureSpec, RankingModel, LoopState, WarmStartReport | None]:
    """The run's starting point: the last checkpoint of an interrupted run, or a fresh model
    (fitted spec, seeded init, output bias at the base rate, optionally warm-started)."""
    report: WarmStartReport | None = None
    if last is not None:
        checkpoint = load_checkpoint(last, expect_kind=kind)
        state = LoopState.from_dict(checkpoint.trainer_state or {})
        if state.warm_start_report:
            report = WarmStartReport.from_dict(state.warm_start_report)
        log.info("resuming %s from %s (step %d)", kind, last, state.step)
        return checkpoint, checkpoint.spec, checkpoint.model, state, report
    source = None
    if warm_start_from is not None:
        source = load_checkpoint(Path(warm_start_from))  # follows a run folder's pointer
    keep = source.spec if source is not None and config.warm_start.keep_scaling else None
    spec = FeatureSpec.fit(schema, train_df, config, scaling_from=keep)
    torch.manual_seed(seed)
    model = build_model(kind, spec, config)
    state = LoopState()
    _init_output_bias(model, train_df, spec.label)
    if source is not None:
        report = warm_start(model, source)
        state.warm_start_report = report.to_dict()
        log.info("%s", report.summary())
    return None, spec, model, state, report


def _teacher_targets(warm_start_from: Path | None, train_df: pd.DataFrame) -> torch.Tensor:
    """The production checkpoint's predictions on the training rows (distillation targets)."""
    assert warm_start_from is not None
    teacher = Scorer.from_checkpoint(Path(warm_start_from))
    return torch.from_numpy(teacher.predict_proba(train_df)).float()


def _restore_training_state(
    checkpoint: Checkpoint, optimizer: torch.optim.Optimizer, model: RankingModel
) -> None:
    if checkpoint.optimizer_state is None or RNG_TENSOR not in checkpoint.tensors:
        raise CheckpointError(f"{checkpoint.path}: no optimizer / RNG state to resume from")
    restore_optimizer(optimizer, model, checkpoint.optimizer_state, checkpoint.path)
    torch.set_rng_state(checkpoint.tensors[RNG_TENSOR])


def _training_optimizer(
    trainee: Trainee, checkpoint: Checkpoint | None, *, warm: bool
) -> torch.optim.Optimizer:
    """The model in training mode and its optimizer; a resumed run's optimizer and RNG state
    restored from ``checkpoint``."""
    model, config = trainee.model, trainee.config
    model.train()
    lr_scale = config.warm_start.learning_rate_scale if warm else 1.0
    dense_decay = config.dense_weight_decay(trainee.kind)
    optimizer = _make_optimizer(model, config.training, lr_scale, dense_decay)
    if checkpoint is not None:
        _restore_training_state(checkpoint, optimizer, model)
    return optimizer


def _result(
    kind: str,
    run_dir: Path,
    state: LoopState,
    config: ModelConfig,
    report: WarmStartReport | None,
    seed: int,
    *,
    resumed: bool,
) -> TrainResult:
    path = resolve_checkpoint(run_dir)
    final = load_checkpoint(path, expect_kind=kind)
    return TrainResult(
        kind=kind,
        model=final.model,
        spec=final.spec,
        config=config,
        history=state.history,
        best_metrics=state.best_metrics,
        best_step=state.best_step,
        checkpoint_path=path,
        run_dir=run_dir,
        warm_start_report=report,
        resumed=resumed,
        stopped_early=state.stopped_early,
        seed=seed,
    )


def _init_output_bias(model: RankingModel, train_df: pd.DataFrame, label: str) -> None:
    # Start at the base rate instead of p = 0.5: the first hundred steps otherwise only learn
    # the intercept. A warm start overwrites this with the production model's bias.
    rate = float(pd.to_numeric(train_df[label]).mean())
    rate = min(max(rate, 1e-4), 1 - 1e-4)
    with torch.no_grad():
        model.output_bias().fill_(math.log(rate / (1 - rate)))


def _make_optimizer(
    model: torch.nn.Module,
    tc: TrainingConfig,
    lr_scale: float = 1.0,
    dense_weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Adam with two groups: id-indexed tables (embeddings, wide weights: sparse, many rows,
    each seen rarely) get their own learning rate and L2; everything else the dense ones.
    ``lr_scale`` multiplies both rates (``warm_start.learning_rate_scale``);
    ``dense_weight_decay`` (the network's own, :meth:`ModelConfig.dense_weight_decay`) replaces
    ``tc.weight_decay``."""
    dense_decay = tc.weight_decay if dense_weight_decay is None else dense_weight_decay
    ids, dense = [], []
    for name, parameter in model.named_parameters():
        is_table = name.startswith("embeddings.tables.") or name.startswith("wide.tables.")
        (ids if is_table else dense).append(parameter)
    groups = [
        {"params": dense, "lr": tc.learning_rate * lr_scale, "weight_decay": dense_decay},
        {
            "params": ids,
            "lr": (tc.embedding_learning_rate or tc.learning_rate) * lr_scale,
            "weight_decay": tc.embedding_weight_decay,
        },
    ]
    return torch.optim.Adam([g for g in groups if g["params"]], fused=True)


def _tensor_digest(*tensors: FeatureTensors) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        for part in (t.sparse, t.dense, t.cross, t.label):
            if part is not None:
                digest.update(str(tuple(part.shape)).encode())
                digest.update(part.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _identity(
    kind: str,
    seed: int,
    config: ModelConfig,
    threads: int,
    train_t: FeatureTensors,
    valid_t: FeatureTensors,
    warm_start_from: Path | None,
) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    values = {k: v for k, v in config.flat().items() if k != "training.progress"}
    return {
        "kind": kind,
        "seed": seed,
        "threads": threads,
        "config": values,
        "train_rows": len(train_t),
        "valid_rows": len(valid_t),
        "data": _tensor_digest(train_t, valid_t),
        "warm_start_from": (
            str(resolve_checkpoint(Path(warm_start_from)).resolve()) if warm_start_from else None
        ),
    }


def _check_identity(saved: Mapping[str, Any], now: Mapping[str, Any], path: Path) -> None:
    problems = []
    for key in ("kind", "seed", "threads", "train_rows", "valid_rows", "warm_start_from"):
        if saved.get(key) != now.get(key):
            problems.append(f"{key}: checkpoint {saved.get(key)!r}, now {now.get(key)!r}")
    saved_cfg, now_cfg = saved.get("config", {}), now.get("config", {})
    for key in sorted(set(saved_cfg) | set(now_cfg)):
        if saved_cfg.get(key) != now_cfg.get(key):
            problems.append(
                f"config {key}: checkpoint {saved_cfg.get(key)!r}, now {now_cfg.get(key)!r}"
            )
    if not problems and saved.get("data") != now.get("data"):
        problems.append("data: the train/valid rows differ from the checkpointed run's")
    if problems:
        raise CheckpointError(
            f"{path}: cannot resume, the run differs from the checkpointed one:\n  "
            + "\n  ".join(problems)
            + "\n(use another checkpoint_dir, or resume=False / --no-resume to start over)"
        )


def _remove_partial_writes(run_dir: Path) -> None:
    # Leftovers of a process killed while writing a checkpoint (see save_checkpoint).
    for child in run_dir.iterdir():
        if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _clear_run(run_dir: Path) -> None:
    for child in run_dir.iterdir():
        if child.name in (LAST_POINTER, BEST_POINTER):
            child.unlink()
        elif child.is_dir() and (child.name.startswith("ckpt-") or child.name == FINAL_CHECKPOINT):
            shutil.rmtree(child)
