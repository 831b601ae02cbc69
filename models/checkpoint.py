"""Checkpoints: safetensors for tensors, JSON for everything else, checksummed, written atomically.

A checkpoint is a directory::

    manifest.json              format version, kind, sha256 + size of every other file
    model.safetensors          the model's state_dict
    spec.json                  the fitted FeatureSpec (all scoring needs besides weights)
    model_config.json          the ModelConfig the model was built with
    optimizer.safetensors      optional: optimizer state tensors ("state/<i>/<name>")
    optimizer.json             optional: optimizer param groups and parameter names
    trainer_state.json         optional: where training was (epoch, step, history, ...)
    trainer_tensors.safetensors  optional: e.g. the torch RNG state

Nothing is unpickled (safetensors and JSON only), so loading a checkpoint cannot run code.
The directory is written under a temporary name and renamed into place, so a process killed
mid-save (kill -9) leaves either the previous checkpoint or the new one, never half of one.
A training run's folder holds several checkpoints plus two pointer files, ``LAST_CHECKPOINT``
and ``BEST_CHECKPOINT``, each replaced atomically; ``resolve_checkpoint`` follows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.atomic import replace_dir
from models.config import ModelConfig, ModelConfigError, parse_model_config
from models.networks import RankingModel, build_model
from models.spec import FeatureSpec, FeatureSpecError

CHECKPOINT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
CONFIG_FILE = "model_config.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
TRAINER_STATE = "trainer_state.json"
TRAINER_TENSORS = "trainer_tensors.safetensors"
LAST_POINTER = "LAST_CHECKPOINT"
BEST_POINTER = "BEST_CHECKPOINT"


class CheckpointError(RuntimeError):
    """A missing, corrupted or mismatched checkpoint; the message names the file."""


@dataclass
class Checkpoint:
    path: Path
    kind: str
    model: RankingModel
    spec: FeatureSpec
    config: ModelConfig
    manifest: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------------------- saving
def save_checkpoint(
    path: Path,
    *,
    kind: str,
    model: RankingModel,
    spec: FeatureSpec,
    config: ModelConfig,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory at ``path`` atomically (replacing one already there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
        save_file(state, str(tmp / MODEL_FILE), metadata={"kind": kind})
        (tmp / SPEC_FILE).write_text(spec.to_json())
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
        if optimizer is not None:
            tensors, meta = _optimizer_to_files(optimizer, model)
            save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
            (tmp / OPTIMIZER_JSON).write_text(json.dumps(meta, indent=1))
        if trainer_state is not None:
            (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
        if extra_tensors:
            save_file(
                {k: v.detach().contiguous() for k, v in extra_tensors.items()},
                str(tmp / TRAINER_TENSORS),
            )
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "kind": kind,
            "created_at": datetime.now(UTC).isoformat(),
            "torch_version": torch.__version__,
            "files": {name: _file_digest(tmp / name) for name in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _fsync_dir_files(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_pointer(run_dir: Path, pointer: str, checkpoint: Path) -> None:
    """Point ``run_dir/pointer`` at ``checkpoint`` (a sibling directory), atomically."""
    tmp = run_dir / f".{pointer}.tmp-{os.getpid()}"
    tmp.write_text(checkpoint.name + "\n")
    os.replace(tmp, run_dir / pointer)


def read_pointer(run_dir: Path, pointer: str) -> Path | None:
    """The checkpoint ``run_dir/pointer`` names, or None if there is no such pointer."""
    file = run_dir / pointer
    if not file.is_file():
        return None
    target = run_dir / file.read_text().strip()
    if not (target / MANIFEST).is_file():
        raise CheckpointError(f"{file}: points at {target.name}, which is not a checkpoint")
    return target


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory itself, or the best (else last) one of a training run folder."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    for pointer in (BEST_POINTER, LAST_POINTER):
        target = read_pointer(path, pointer)
        if target is not None:
            return target
    raise CheckpointError(
        f"{path}: not a checkpoint (no {MANIFEST}) and not a training folder "
        f"(no {BEST_POINTER} / {LAST_POINTER})"
    )


# ------------------------------------------------------------------------------ loading
def load_checkpoint(path: Path, *, expect_kind: str | None = None) -> Checkpoint:
    """Load and verify a checkpoint (or a training folder's best one) into a rebuilt model."""
    path = resolve_checkpoint(path)
    manifest = _read_manifest(path)
    kind = manifest.get("kind")
    if expect_kind is not None and kind != expect_kind:
        raise CheckpointError(
            f"{path / MANIFEST}: checkpoint is a {kind!r} model, expected {expect_kind!r}"
        )
    try:
        spec = FeatureSpec.load(path / SPEC_FILE)
    except FeatureSpecError as error:
        raise CheckpointError(str(error)) from None
    try:
        config = parse_model_config(
            json.loads((path / CONFIG_FILE).read_text()), str(path / CONFIG_FILE)
        )
    except (ModelConfigError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path / CONFIG_FILE}: {error}") from None
    try:
        model = build_model(str(kind), spec, config)
    except ValueError as error:
        raise CheckpointError(f"{path / MANIFEST}: {error}") from None
    load_weights(model, path / MODEL_FILE)
    model.eval()

    optimizer_state = None
    if (path / OPTIMIZER_TENSORS).is_file():
        optimizer_state = _optimizer_from_files(path)
    trainer_state = None
    if (path / TRAINER_STATE).is_file():
        trainer_state = _read_json(path / TRAINER_STATE)
    tensors: dict[str, torch.Tensor] = {}
    if (path / TRAINER_TENSORS).is_file():
        tensors = _load_tensors(path / TRAINER_TENSORS)
    return Checkpoint(
        path=path,
        kind=str(kind),
        model=model,
        spec=spec,
        config=config,
        manifest=manifest,
        optimizer_state=optimizer_state,
        trainer_state=trainer_state,
        tensors=tensors,
    )


def load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load a safetensors state_dict into ``model``; any name or shape mismatch is listed."""
    state = _load_tensors(file)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{name}: file {list(state[name].shape)}, model {list(expected[name].shape)}"
        for name in sorted(set(state) & set(expected))
        if state[name].shape != expected[name].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes))
        raise CheckpointError(
            f"{file}: does not match the model built from its spec and config: " + " | ".join(parts)
        )
    model.load_state_dict(state)


def restore_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, state: dict[str, Any], source: Path
) -> None:
    """Load an optimizer state saved by ``save_checkpoint``, checking it belongs to ``model``."""
    names = _param_names(optimizer, model)
    if state["param_names"] != names:
        raise CheckpointError(
            f"{source / OPTIMIZER_JSON}: optimizer parameters do not match the model "
            f"({len(state['param_names'])} saved, {len(names)} now; first difference at "
            f"{_first_difference(state['param_names'], names)})"
        )
    optimizer.load_state_dict({"state": state["state"], "param_groups": state["param_groups"]})


# ------------------------------------------------------------------------------ helpers
def _file_digest(file: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": file.stat().st_size}


def _fsync_dir_files(directory: Path) -> None:
    # Survive a machine crash too, not only a killed process (whose writes the OS keeps).
    for file in directory.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: unreadable ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return data


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = _read_json(path / MANIFEST)
    version = manifest.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path / MANIFEST}: checkpoint format_version {version!r}, this code reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise CheckpointError(f"{path / MANIFEST}: lists no {MODEL_FILE}")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in {MANIFEST} but missing")
        actual = _file_digest(file)
        if actual["bytes"] != expected.get("bytes"):
            raise CheckpointError(
                f"{file}: {actual['bytes']} bytes, {MANIFEST} says {expected.get('bytes')} "
                "(truncated or modified)"
            )
        if actual["sha256"] != expected.get("sha256"):
            raise CheckpointError(f"{file}: sha256 differs from {MANIFEST} (corrupted or modified)")
    return manifest


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{file}: not a readable safetensors file ({error})") from None


def _param_names(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _optimizer_to_files(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = {
        "class": type(optimizer).__name__,
        "param_groups": state_dict["param_groups"],
        "param_names": _param_names(optimizer, model),
        "scalars": scalars,
    }
    return tensors, meta


def _optimizer_from_files(path: Path) -> dict[str, Any]:
    meta = _read_json(path / OPTIMIZER_JSON)
    tensors = _load_tensors(path / OPTIMIZER_TENSORS)
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])  # JSON turned the tuple into a list
        groups.append(group)
    return {
        "class": meta.get("class"),
        "state": state,
        "param_groups": groups,
        "param_names": meta["param_names"],
    }


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"#{i}: saved {x!r}, now {y!r}"
    return f"#{min(len(a), len(b))}"
