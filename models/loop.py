"""The training loop of one run: shuffled batches, evaluations, early stopping, checkpoints.

:func:`models.train.train_model` prepares a run (spec, model, optimizer, a fresh or resumed
:class:`LoopState`) and hands it to :class:`TrainingLoop`. The loop state is everything
besides tensors that a resumed run needs; with the model, optimizer and RNG state it is what
every checkpoint holds, so a run killed at any step resumes to the same result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.checkpoint import (
    BEST_POINTER,
    LAST_POINTER,
    MODEL_FILE,
    load_weights,
    read_pointer,
    save_checkpoint,
    write_pointer,
)
from models.config import ModelConfig, TrainingConfig
from models.metrics import auc, evaluate, logloss
from models.networks import RankingModel, predict_logits
from models.spec import FeatureSpec, FeatureTensors

log = logging.getLogger(__name__)

FINAL_CHECKPOINT = "final"
RNG_TENSOR = "rng/torch"
StepCallback = Callable[[int, float], None]


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs; saved as trainer_state.json."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0
    loss_sum: float = 0.0  # train loss since the last evaluation
    loss_count: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_logloss: float | None = None
    best_step: int = -1
    best_checkpoint: str | None = None
    bad_evals: int = 0
    finished: bool = False
    stopped_early: bool = False
    best_metrics: dict[str, float] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    warm_start_report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Trainee:
    """The model being trained and what its checkpoints record with it."""

    kind: str
    model: RankingModel
    spec: FeatureSpec
    config: ModelConfig


@dataclass(frozen=True)
class LoopData:
    """The transformed splits and, when distilling, the teacher's prediction per train row."""

    train: FeatureTensors
    valid: FeatureTensors
    soft: torch.Tensor | None


class TrainingLoop:
    """The epochs of one run, from ``state`` on: shuffled batches, an evaluation and a
    checkpoint at every epoch end (and every ``eval_every`` steps), early stopping, and a
    final checkpoint of the best weights."""

    def __init__(
        self,
        trainee: Trainee,
        optimizer: torch.optim.Optimizer,
        data: LoopData,
        run_dir: Path,
        state: LoopState,
        seed: int,
    ) -> None:
        self.kind, self.model = trainee.kind, trainee.model
        self.spec, self.config = trainee.spec, trainee.config
        self.tc = trainee.config.training
        self.optimizer, self.run_dir, self.state = optimizer, run_dir, state
        self.train_t, self.valid_t, self.soft, self.seed = data.train, data.valid, data.soft, seed
        self.steps_per_epoch = math.ceil(len(self.train_t) / self.tc.batch_size)
        tc = self.tc
        self.eval_every = (
            max(1, round(tc.eval_every_epochs * self.steps_per_epoch))
            if tc.eval_every_epochs is not None
            else tc.eval_every_steps
        )
        assert self.valid_t.label is not None
        positives = int(self.valid_t.label.sum())
        # Rule for a small valid split: its logloss cannot tell checkpoints apart, so there is
        # no early stopping; a fixed budget is trained and its last weights are the result.
        self.small_valid = positives < tc.min_valid_positives
        epochs = min(tc.small_valid_epochs, tc.max_epochs) if self.small_valid else tc.max_epochs
        self.max_steps = max(1, math.ceil(epochs * self.steps_per_epoch))
        if self.small_valid:
            log.warning(
                "%s: the valid split has %d positives (< training.min_valid_positives = %d): "
                "no early stopping, training %.2g epoch(s) and keeping the last weights",
                self.kind,
                positives,
                tc.min_valid_positives,
                epochs,
            )

    def run(self, step_callback: StepCallback | None) -> None:
        state, tc = self.state, self.tc
        stop = False
        while not stop and state.epoch < tc.max_epochs and state.step < self.max_steps:
            stop = self._run_epoch(step_callback)
        state.stopped_early = stop
        self._finish()

    def _run_epoch(self, step_callback: StepCallback | None) -> bool:
        """The current epoch from ``state.batch`` on; True when training is to stop."""
        state = self.state
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, state.epoch))
        perm = torch.randperm(len(self.train_t), generator=generator)
        data = self.train_t.take(perm)  # one gather per epoch; batches below are views
        soft = None if self.soft is None else self.soft[perm]
        progress = _Progress(self.kind, state, self.steps_per_epoch, self.tc)
        stop = False
        for b in range(state.batch, self.steps_per_epoch):
            value = self._step(data, soft, b)
            end_of_epoch = self._count_step(b, value)
            progress.update(state.step, value)
            if step_callback is not None:
                step_callback(state.step, value)
            stop = self._evaluate_if_due(end_of_epoch)
            if stop or end_of_epoch:
                break
        progress.close()
        return stop

    def _step(self, data: FeatureTensors, soft: torch.Tensor | None, batch: int) -> float:
        """One optimiser step on batch ``batch`` of the epoch's shuffled rows; its loss."""
        bs = self.tc.batch_size
        lo, hi = batch * bs, min(len(data), (batch + 1) * bs)
        assert data.label is not None
        logits = self.model(data.sparse[lo:hi], data.dense[lo:hi], data.cross[lo:hi])
        loss = F.binary_cross_entropy_with_logits(logits, data.label[lo:hi])
        if soft is not None:
            weight = self.config.warm_start.distill_weight
            soft_loss = F.binary_cross_entropy_with_logits(logits, soft[lo:hi])
            loss = (1 - weight) * loss + weight * soft_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def _count_step(self, batch: int, loss: float) -> bool:
        """Record a finished step in the loop state; True at the end of an epoch."""
        state = self.state
        state.step += 1
        state.batch = batch + 1
        state.loss_sum += loss
        state.loss_count += 1
        if state.batch < self.steps_per_epoch:
            return False
        state.epoch += 1
        state.batch = 0
        return True

    def _evaluate_if_due(self, end_of_epoch: bool) -> bool:
        """Evaluate (and checkpoint) at an epoch's end, the step budget or every ``eval_every``
        steps, else checkpoint every ``checkpoint_every_steps``; True when training is to stop."""
        step = self.state.step
        at_limit = step >= self.max_steps
        if end_of_epoch or at_limit or (self.eval_every and step % self.eval_every == 0):
            return self._evaluate_and_checkpoint() or at_limit
        if step % self.tc.checkpoint_every_steps == 0:
            self._checkpoint(improved=False)
        return False

    def _evaluate_and_checkpoint(self) -> bool:
        state, tc = self.state, self.tc
        assert self.valid_t.label is not None
        probs = torch.sigmoid(predict_logits(self.model, self.valid_t, tc.eval_batch_size))
        y = self.valid_t.label.numpy()
        valid_ll = logloss(y, probs.double().numpy())
        entry = {
            "epoch": state.epoch + state.batch / self.steps_per_epoch,
            "step": float(state.step),
            "train_loss": state.loss_sum / max(state.loss_count, 1),
            "valid_logloss": valid_ll,
            "valid_auc": auc(y, probs.double().numpy()),
        }
        state.history.append(entry)
        state.loss_sum, state.loss_count = 0.0, 0
        improved = state.best_logloss is None or valid_ll < state.best_logloss - tc.min_delta
        improved = improved or self.small_valid  # small valid split: the last weights win
        if improved:
            state.best_logloss, state.best_step, state.bad_evals = valid_ll, state.step, 0
        else:
            state.bad_evals += 1
        log.info(
            "%s step %d epoch %.2f: train_loss %.5f valid_logloss %.5f valid_auc %.4f%s",
            self.kind,
            state.step,
            entry["epoch"],
            entry["train_loss"],
            valid_ll,
            entry["valid_auc"],
            " (best)" if improved else "",
        )
        self._checkpoint(improved=improved)
        if state.bad_evals == 0:
            return False
        if tc.patience_epochs is not None:
            return state.step - state.best_step >= tc.patience_epochs * self.steps_per_epoch
        return state.bad_evals >= tc.patience

    def _checkpoint(self, *, improved: bool) -> Path:
        name = f"ckpt-{self.state.step:09d}"
        if improved:
            self.state.best_checkpoint = name
        path = save_checkpoint(
            self.run_dir / name,
            kind=self.kind,
            model=self.model,
            spec=self.spec,
            config=self.config,
            optimizer=self.optimizer,
            trainer_state=self.state.to_dict(),
            extra_tensors={RNG_TENSOR: torch.get_rng_state()},
        )
        if improved:
            write_pointer(self.run_dir, BEST_POINTER, path)
        write_pointer(self.run_dir, LAST_POINTER, path)
        _remove_unreferenced(self.run_dir)
        return path

    def _finish(self) -> None:
        state = self.state
        if state.best_checkpoint is None:  # no evaluation happened (cannot with >= 1 epoch)
            raise RuntimeError("training ended without an evaluation")
        load_weights(self.model, self.run_dir / state.best_checkpoint / MODEL_FILE)
        self.model.eval()
        probs = torch.sigmoid(predict_logits(self.model, self.valid_t, self.tc.eval_batch_size))
        assert self.valid_t.label is not None
        labels = pd.DataFrame({"label": self.valid_t.label.numpy()})
        metrics = evaluate(probs.double().numpy(), labels)
        metrics["best_step"] = float(state.best_step)
        metrics["steps"] = float(state.step)
        state.best_metrics = metrics
        state.finished = True
        # The final checkpoint holds the best weights and the finished state, no optimizer:
        # it is what scoring, registries and the next warm start read.
        path = save_checkpoint(
            self.run_dir / FINAL_CHECKPOINT,
            kind=self.kind,
            model=self.model,
            spec=self.spec,
            config=self.config,
            trainer_state=state.to_dict(),
        )
        write_pointer(self.run_dir, BEST_POINTER, path)
        write_pointer(self.run_dir, LAST_POINTER, path)
        _remove_unreferenced(self.run_dir)


class _Progress:
    """An epoch's progress bar with a smoothed loss; shown on a terminal only (None), so
    scheduler logs do not fill with bars."""

    def __init__(self, kind: str, state: LoopState, steps: int, tc: TrainingConfig) -> None:
        self.bar = tqdm(
            total=steps,
            initial=state.batch,
            desc=f"{kind} epoch {state.epoch + 1}/{tc.max_epochs}",
            disable=None if tc.progress else True,
            leave=False,
            mininterval=0.5,
        )
        self.ema: float | None = None

    def update(self, step: int, loss: float) -> None:
        self.ema = loss if self.ema is None else 0.98 * self.ema + 0.02 * loss
        self.bar.update(1)
        if step % 25 == 0:
            self.bar.set_postfix(loss=f"{self.ema:.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def _remove_unreferenced(run_dir: Path) -> None:
    keep = {
        target.name
        for pointer in (LAST_POINTER, BEST_POINTER)
        if (target := read_pointer(run_dir, pointer)) is not None
    }
    for child in run_dir.iterdir():
        if child.is_dir() and child.name.startswith("ckpt-") and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
