"""Warm start: copy a production checkpoint's parameters into a new model, by name and meaning.

Parameters are matched by name. Within a matched parameter each axis is matched either by
keys (``RankingModel.param_axes``: vocabulary tokens for embedding rows, x0 column names for
the layers that read x0) or, where an axis has no keys, by index. So:

- a vocabulary that changed between windows keeps each token's row (new tokens start fresh);
- a new feature adds columns to the first MLP / cross layers: the old columns are copied into
  their new positions and the new feature's columns keep their fresh initialisation;
- a changed hash size copies the overlapping rows (``min(old, new)``), the rest stay fresh;
- a parameter the source does not have (a new feature's table) stays freshly initialised.

The report lists what was loaded whole, resized (partly copied), initialised, and unused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from models.networks import AxisKeys, RankingModel


@dataclass
class WarmStartReport:
    source: str
    source_kind: str
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WarmStartReport:
        return cls(**data)

    def summary(self) -> str:
        lines = [
            f"warm start from {self.source} ({self.source_kind}): {len(self.loaded)} loaded, "
            f"{len(self.resized)} resized, {len(self.initialised)} initialised, "
            f"{len(self.unused)} unused"
        ]
        lines += [f"  resized     {name}: {why}" for name, why in self.resized.items()]
        lines += [f"  initialised {name}: {why}" for name, why in self.initialised.items()]
        lines += [f"  unused      {name}" for name in self.unused]
        return "\n".join(lines)


def warm_start(model: RankingModel, source: Path | Checkpoint) -> WarmStartReport:
    """Copy matching parameters from ``source`` (a checkpoint, a run folder, or a loaded one)."""
    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    old_model = checkpoint.model
    old_state = old_model.state_dict()
    old_axes = old_model.param_axes()
    new_axes = model.param_axes()
    report = WarmStartReport(
        source=str(resolve_checkpoint(checkpoint.path)), source_kind=checkpoint.kind
    )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, target in params.items():
            if name not in old_state:
                report.initialised[name] = "not in the source checkpoint"
                continue
            old = old_state[name]
            if old.dim() != target.dim():
                report.initialised[name] = (
                    f"rank differs: source {list(old.shape)}, model {list(target.shape)}"
                )
                continue
            ndim = target.dim()
            new_index, old_index, identity = _axis_pairs(
                target.shape,
                old.shape,
                new_axes.get(name, (None,) * ndim),
                old_axes.get(name, (None,) * ndim),
            )
            copied = _copy_block(target, old, new_index, old_index)
            if identity:
                report.loaded.append(name)
            elif copied == 0:
                report.initialised[name] = (
                    f"nothing in common with the source ({list(old.shape)} -> {list(target.shape)})"
                )
            else:
                report.resized[name] = (
                    f"{list(old.shape)} -> {list(target.shape)}: copied {copied} of "
                    f"{target.numel()} values, the rest freshly initialised"
                )
    report.unused = sorted(set(old_state) - set(params))
    return report


def _axis_pairs(
    new_shape: torch.Size,
    old_shape: torch.Size,
    new_keys: tuple[AxisKeys, ...],
    old_keys: tuple[AxisKeys, ...],
) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
    """Per axis: the new and old indices that correspond; and whether it is all identity."""
    new_index: list[torch.Tensor] = []
    old_index: list[torch.Tensor] = []
    identity = new_shape == old_shape
    for axis, (n_new, n_old) in enumerate(zip(new_shape, old_shape, strict=True)):
        nk, ok = new_keys[axis], old_keys[axis]
        if nk is not None and ok is not None and len(nk) == n_new and len(ok) == n_old:
            position = {key: i for i, key in enumerate(ok)}
            pairs = [(i, position[key]) for i, key in enumerate(nk) if key in position]
        else:
            pairs = [(i, i) for i in range(min(n_new, n_old))]
        if len(pairs) != n_new or any(i != j for i, j in pairs):
            identity = False
        new_index.append(torch.tensor([i for i, _ in pairs], dtype=torch.long))
        old_index.append(torch.tensor([j for _, j in pairs], dtype=torch.long))
    return new_index, old_index, identity


def _copy_block(
    target: torch.Tensor,
    source: torch.Tensor,
    new_index: list[torch.Tensor],
    old_index: list[torch.Tensor],
) -> int:
    if any(len(index) == 0 for index in new_index):
        return 0
    if target.dim() == 0:
        target.copy_(source)
        return 1
    new_grid = torch.meshgrid(*new_index, indexing="ij")
    old_grid = torch.meshgrid(*old_index, indexing="ij")
    target[new_grid] = source[old_grid].to(target.dtype)
    return int(new_grid[0].numel())
