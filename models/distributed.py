"""Data-parallel training with torch DDP (gloo): the same model and optimiser on N processes.

Why: past one machine's cores, the training step scales by splitting every batch over
processes (on one host here, over hosts with a real ``init_method``), not by a different loop.
The path is built to be equivalent to :func:`models.train.train_model`:

- the parent fits the feature spec, seeds and builds the model (same seed, same output-bias
  start) and transforms the splits once; every rank gets the same initial weights;
- each epoch uses the single-process permutation (``epoch_seed``), and each global batch of
  ``training.batch_size`` rows is cut into ``world_size`` contiguous shards, one per rank. DDP
  averages the shard gradients, which for equal shards is the gradient of the full batch's mean
  loss: the optimiser takes the same steps, up to float summation order (and dropout draws,
  which come from per-rank generators);
- rank 0 evaluates validation log loss after every epoch, keeps the best weights and decides
  early stopping (``patience`` evaluations); the decision is broadcast so all ranks stop together.

Not supported here: distillation from a teacher, resuming from checkpoints (a DDP run is
restarted whole). The result is the best weights as safetensors plus the validation metrics.
"""

from __future__ import annotations

import copy
import json
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from models.config import MODEL_KINDS, ModelConfig
from models.loop import epoch_seed
from models.metrics import evaluate, logloss
from models.networks import RankingModel, build_model, predict_logits
from models.spec import FeatureSpec, FeatureTensors
from models.train import _init_output_bias, _make_optimizer

WEIGHTS_FILE = "model.safetensors"
HISTORY_FILE = "history.json"


@dataclass
class DistributedResult:
    kind: str
    model: RankingModel  # the best weights, in the parent process
    spec: FeatureSpec
    world_size: int
    history: list[dict[str, float]]
    metrics: dict[str, float]  # validation metrics of the best weights (models.metrics.evaluate)
    weights_path: Path
    rows_per_rank: list[int]  # training rows each rank stepped on, over all epochs


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_distributed(
    kind: Literal["wide_deep", "dcn"],
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame,
    schema: dict[str, str],
    config: ModelConfig,
    *,
    out_dir: Path,
    world_size: int = 2,
    seed: int | None = None,
    init_method: str | None = None,
) -> DistributedResult:
    """Train ``kind`` on ``world_size`` local processes (gloo); return the best weights.

    ``init_method``: where the ranks meet (default a free TCP port on loopback). Ranks use one
    thread each, so ``world_size`` processes fill ``world_size`` cores.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
    if config.warm_start.distill_weight > 0:
        raise ValueError("distillation (warm_start.distill_weight > 0) is not supported with DDP")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    seed = config.training.seed if seed is None else seed
    spec = FeatureSpec.fit(schema, train_df, config)
    torch.manual_seed(seed)
    model = build_model(kind, spec, config)
    _init_output_bias(model, train_df, spec.label)
    train_t = spec.transform(train_df, require_label=True)
    valid_t = spec.transform(valid_df, require_label=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    method = init_method or f"tcp://127.0.0.1:{_free_port()}"
    job = _Job(model, train_t, valid_t, config, seed, world_size, method, str(out_dir))
    mp.spawn(_rank_main, args=(job,), nprocs=world_size, join=True)

    model.load_state_dict(load_file(str(out_dir / WEIGHTS_FILE)))
    model.eval()
    probs = torch.sigmoid(predict_logits(model, valid_t, config.training.eval_batch_size))
    assert valid_t.label is not None
    labels = pd.DataFrame({"label": valid_t.label.numpy()})
    metrics = evaluate(probs.double().numpy(), labels)
    history = json.loads((out_dir / HISTORY_FILE).read_text())
    rows = [int((out_dir / f"rank-{r}.rows").read_text()) for r in range(world_size)]
    return DistributedResult(
        kind, model, spec, world_size, history, metrics, out_dir / WEIGHTS_FILE, rows
    )


@dataclass
class _Job:
    """What every rank receives (pickled once by ``mp.spawn``)."""

    model: RankingModel
    train_t: FeatureTensors
    valid_t: FeatureTensors
    config: ModelConfig
    seed: int
    world_size: int
    init_method: str
    out_dir: str


def _shard(lo: int, hi: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part of rows ``lo:hi`` (sizes differ by at most one)."""
    size = hi - lo
    start = lo + (size * rank) // world
    return start, lo + (size * (rank + 1)) // world


def _rank_main(rank: int, job: _Job) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=job.init_method, rank=rank, world_size=job.world_size
    )
    try:
        _train_rank(rank, job)
    finally:
        dist.destroy_process_group()


def _train_rank(rank: int, job: _Job) -> None:
    # A private copy: torch.multiprocessing hands tensors over in shared memory, and each rank
    # must own its parameters (DDP keeps them equal by averaging gradients, not by sharing).
    tc, model, world = job.config.training, copy.deepcopy(job.model), job.world_size
    torch.manual_seed(job.seed * 1_000 + rank)  # dropout: a stream per rank
    # on the module's own parameter names
    optimizer = _make_optimizer(
        model, tc, dense_weight_decay=job.config.dense_weight_decay(model.kind)
    )
    ddp = DistributedDataParallel(model)
    n, bs = len(job.train_t), tc.batch_size
    # A last batch with fewer rows than ranks would leave a rank without work: drop it.
    steps = n // bs + (1 if n % bs >= world else 0)
    best: dict[str, torch.Tensor] | None = None
    best_ll, bad, history, rows = math.inf, 0, [], 0
    for epoch in range(tc.max_epochs):
        generator = torch.Generator().manual_seed(epoch_seed(job.seed, epoch))
        data = job.train_t.take(torch.randperm(n, generator=generator))
        assert data.label is not None
        ddp.train()
        total = 0.0
        for b in range(steps):
            start, stop = _shard(b * bs, min(n, (b + 1) * bs), rank, world)
            logits = ddp(data.sparse[start:stop], data.dense[start:stop], data.cross[start:stop])
            loss = F.binary_cross_entropy_with_logits(logits, data.label[start:stop])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            total += float(loss.item())
            rows += stop - start
        stop_flag = torch.zeros(1)
        if rank == 0:
            valid_ll = _valid_logloss(model, job)
            history.append(
                {
                    "epoch": float(epoch + 1),
                    "train_loss": total / max(steps, 1),
                    "valid_logloss": valid_ll,
                }
            )
            if valid_ll < best_ll - tc.min_delta:
                best_ll, bad = valid_ll, 0
                best = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            else:
                bad += 1
            stop_flag[0] = float(bad > 0 and bad >= tc.patience)
        dist.broadcast(stop_flag, src=0)
        if stop_flag.item():
            break
    out = Path(job.out_dir)
    (out / f"rank-{rank}.rows").write_text(str(rows))
    if rank == 0:
        assert best is not None
        save_file(best, str(out / WEIGHTS_FILE))
        (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))


def _valid_logloss(model: RankingModel, job: _Job) -> float:
    model.eval()
    with torch.no_grad():
        logits = predict_logits(model, job.valid_t, job.config.training.eval_batch_size)
    model.train()
    assert job.valid_t.label is not None
    return logloss(job.valid_t.label.numpy(), torch.sigmoid(logits).double().numpy())


def describe(result: DistributedResult) -> dict[str, Any]:
    """JSON-able summary (no model)."""
    return {
        "kind": result.kind,
        "world_size": result.world_size,
        "metrics": result.metrics,
        "epochs": len(result.history),
        "weights": str(result.weights_path),
    }
