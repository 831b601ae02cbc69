"""What a state directory was built with, remembered, and held against every later command.

The data of a state dir (the raw files, the truth, the warehouse and the exports the online
store is materialized from) is built by the simulator and by dbt from a few config keys: the
``simulation:`` section (when ``source: simulate``) and the dbt vars of ``warehouse:`` that
change feature values. When a build completes, those keys' values are written to
``built-with.json`` in the state dir (:attr:`StatePaths.built_with`), with the config file's own
values beside them, which commit built it and when.

Before a command runs on a state that has such a record, :func:`settled_overrides` compares:

- a key the command asks to change (its ``--set``, or a config file whose value is not the one
  it had at the build) refuses the command with one line naming each key, the state's value and
  the requested one, before anything is written: the built state stays as it is;
- a key the command does not ask for takes the state's value: ``rankflow canary`` after
  ``rankflow --set simulation.n_impressions=200000 run`` works on the 200,000 impressions;
- ``simulation.end_date`` is the window's position, which moves by design (a later end date
  appends days; docs/data-contract.md, "Simulator"): a command may move it, never refused;
- ``warehouse.lookback_days`` and every key outside the two sections (model, gates, canary,
  serving, monitoring) change how things run, not the built data: never compared.

A command that means to rebuild the state's data with other values says so (``--rebuild`` on the
commands that build). A state dir built before this record existed has none; its next build
writes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from models.yaml_config import flatten
from rankflow.config import WarehouseConfig, load_config
from rankflow.errors import ConfigError, RankflowError
from rankflow.paths import StatePaths

__all__ = [
    "MOVING_KEYS",
    "BuildRecord",
    "BuildRequest",
    "StateSettingsError",
    "build_request",
    "build_settings",
    "compare",
    "read_record",
    "record_build",
    "settled_overrides",
]

FORMAT_VERSION = 1
# The window's position: a later end date appends days, shared days come out byte-identical.
MOVING_KEYS = frozenset({"simulation.end_date"})
# How much an incremental build reprocesses, not what it writes.
NOT_RECORDED = frozenset({"warehouse.lookback_days"})
REBUILD_HINT = (
    "leave them as built to use this state, or rebuild its data with the new values "
    "(`rankflow ... run --rebuild`; also build-features, build, simulate, canary) "
    "or build elsewhere (--home DIR)"
)


class StateSettingsError(RankflowError):
    """A command asks for other simulation / warehouse values than the state was built with."""

    exit_code = 2


@dataclass(frozen=True)
class BuildRequest:
    """What a command would build with: ``settings`` (dotted key -> value) from the config file
    and ``overrides``; ``file_settings`` the same keys from the file alone (a key missing: not
    known). ``None``: the caller built the values itself (keep the record's file values)."""

    settings: dict[str, Any]
    file_settings: dict[str, Any] | None
    overrides: dict[str, Any] = field(default_factory=dict)
    config_file: str = "the config file"


@dataclass(frozen=True)
class BuildRecord:
    """``built-with.json``: the values the state's data was built with, per dotted key."""

    settings: dict[str, Any]
    file_settings: dict[str, Any]
    built: dict[str, dict[str, Any]]  # section -> by, at, git_sha


@dataclass(frozen=True)
class Difference:
    key: str
    built: Any
    requested: Any
    origin: str  # "--set" or the config file


def build_settings(
    source: str, simulation: BaseModel, warehouse: WarehouseConfig
) -> dict[str, Any]:
    """The dotted keys that decide what a build writes, with their values as JSON data.

    ``simulation`` is the ``simulation:`` section (typed loosely: production imports nothing of
    the simulator); it counts only for ``source: simulate``, which writes the raw data.
    """
    sections: dict[str, Any] = {"warehouse": warehouse.model_dump(mode="json")}
    if source == "simulate":
        sections["simulation"] = simulation.model_dump(mode="json")
    return {k: v for k, v in flatten(sections).items() if k not in NOT_RECORDED}


def build_request(config_path: Path | None, overrides: dict[str, Any]) -> BuildRequest:
    """The request of a command that runs on ``config_path`` (None: the default file) with
    ``overrides``; raises ``ConfigError`` for a config that does not validate."""
    config = load_config(config_path, overrides)
    settings = build_settings(config.source, config.simulation, config.warehouse)
    try:
        alone = load_config(config_path, {})
    except ConfigError:  # valid only with the overrides: no file value is known
        file_settings: dict[str, Any] = {}
    else:
        file_settings = build_settings(config.source, alone.simulation, alone.warehouse)
    label = str(config_path) if config_path else "configs/rankflow.yaml"
    return BuildRequest(settings, file_settings, dict(overrides), label)


def read_record(paths: StatePaths) -> BuildRecord | None:
    """The state's record, or None if nothing was built here since records were kept."""
    try:
        data = json.loads(paths.built_with.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StateSettingsError(
            f"{paths.built_with}: unreadable ({error}); it records what the state was built "
            "with: restore it, or rebuild the state's data (--rebuild)"
        ) from error
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise StateSettingsError(
            f"{paths.built_with}: expected format_version {FORMAT_VERSION}; rebuild the "
            "state's data (--rebuild) to rewrite it"
        )
    return BuildRecord(data["settings"], data.get("file_settings", {}), data.get("built", {}))


def _asked_by_set(key: str, overrides: dict[str, Any]) -> bool:
    """A ``--set`` of the key itself or of a section holding it (``simulation={...}``)."""
    return any(key == o or key.startswith(f"{o}.") for o in overrides)


def compare(record: BuildRecord, request: BuildRequest) -> tuple[dict[str, Any], list[Difference]]:
    """What the command takes of the state (key -> built value) and what it asks to change.

    A key differs only if both know it. The command asks for its value when it sets it, or when
    the config file's value is not the one it had at the build (or either is unknown);
    otherwise the state's value stands, as if the command had repeated the build's ``--set``.
    """
    adopted: dict[str, Any] = {}
    conflicts: list[Difference] = []
    known = request.file_settings if request.file_settings is not None else record.file_settings
    for key, wanted in request.settings.items():
        if key not in record.settings or record.settings[key] == wanted:
            continue
        built = record.settings[key]
        by_set = _asked_by_set(key, request.overrides)
        file_moved = (
            key not in known
            or key not in record.file_settings
            or known[key] != record.file_settings[key]
        )
        if not by_set and not file_moved:
            adopted[key] = built
        elif key not in MOVING_KEYS:
            origin = "--set" if by_set else request.config_file
            conflicts.append(Difference(key, built, wanted, origin))
    return adopted, conflicts


def _shown(value: Any) -> str:
    return json.dumps(value)


def mismatch_message(paths: StatePaths, conflicts: list[Difference]) -> str:
    """One line: each key with the state's value and the requested one, and what to do."""
    built = ", ".join(f"{d.key}={_shown(d.built)}" for d in conflicts)
    asked = ", ".join(f"{d.key}={_shown(d.requested)} (from {d.origin})" for d in conflicts)
    return (
        f"the state in {paths.root} was built with {built}, but this command asks for {asked}; "
        f"nothing was run or changed: {REBUILD_HINT}"
    )


def settled_overrides(
    paths: StatePaths, config_path: Path | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The overrides a command runs with on this state: its own, plus the state's values of the
    build keys it does not ask to change. Raises :class:`StateSettingsError` (one line) if it
    asks to change any; returns ``overrides`` as they are on a state without a record."""
    record = read_record(paths)
    if record is None:
        return dict(overrides)
    adopted, conflicts = compare(record, build_request(config_path, overrides))
    if conflicts:
        raise StateSettingsError(mismatch_message(paths, conflicts))
    return {**overrides, **adopted}


def record_build(
    paths: StatePaths,
    request: BuildRequest,
    sections: tuple[str, ...],
    *,
    by: str,
    git_sha: str | None,
) -> None:
    """Remember that ``sections`` of the state were just built as ``request`` asked (the other
    sections keep their record); written atomically, after the build completed."""
    previous = read_record(paths) or BuildRecord({}, {}, {})

    def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in old.items() if k.split(".", 1)[0] not in sections}
        return kept | {k: v for k, v in new.items() if k.split(".", 1)[0] in sections}

    files = previous.file_settings
    if request.file_settings is not None:
        files = merged(previous.file_settings, request.file_settings)
    stamp = {"by": by, "at": datetime.now(UTC).isoformat(timespec="seconds"), "git_sha": git_sha}
    document = {
        "format_version": FORMAT_VERSION,
        "settings": merged(previous.settings, request.settings),
        "file_settings": files,
        "built": {**previous.built, **dict.fromkeys(sections, stamp)},
    }
    target = paths.built_with
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    scratch.replace(target)
