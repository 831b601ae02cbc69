"""The user-tunable configuration, declared in YAML and validated on load.

One file (``configs/rankflow.yaml`` by default) holds every knob a user turns: where the raw data
comes from, the simulator, the warehouse's feature parameters, the training window and split,
and the path of the model config. Every section forbids unknown keys, so a typo is an error that
names the key and the file instead of a silently ignored setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.simulate import SimulationConfig
from rankflow.training_set import SplitConfig

DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "rankflow.yaml"


class ConfigError(ValueError):
    """A configuration file that does not match the schema; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarehouseConfig(_Strict):
    """Parameters handed to dbt as vars."""

    ctr_prior: float = Field(0.045, gt=0, lt=1, description="Prior CTR used to smooth CTR features")
    ctr_prior_strength: float = Field(
        20.0, ge=0, description="Pseudo-impressions of the prior in smoothed CTRs"
    )
    lookback_days: int = Field(
        1, ge=0, description="Recent days an incremental build reprocesses (late data)"
    )


class RankflowConfig(_Strict):
    """The whole pipeline configuration."""

    source: Literal["simulate", "raw"] = Field(
        "simulate",
        description="'simulate' writes the simulator's data into raw_dir first; "
        "'raw' uses whatever contract-conforming data is already there",
    )
    raw_dir: Path | None = Field(
        None, description="Raw data folder (docs/data-contract.md); default $RANKFLOW_HOME/raw"
    )
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    training_set: SplitConfig = Field(default_factory=SplitConfig)
    model_config_path: Path = Field(
        Path("configs/model.yaml"), description="Model config, relative to the repo root"
    )

    def resolved_raw_dir(self, paths: StatePaths) -> Path:
        return Path(self.raw_dir).expanduser().resolve() if self.raw_dir else paths.raw

    def resolved_model_config_path(self) -> Path:
        path = Path(self.model_config_path).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of the config, for logging as run parameters."""
        return _flatten(json.loads(self.model_dump_json()))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_flatten(child, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling)")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: dict[str, Any] | None, source: str = "<dict>") -> RankflowConfig:
    try:
        return RankflowConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> RankflowConfig:
    """Read and validate the YAML config; ``overrides`` are dotted keys (``simulation.days``)."""
    path = Path(path) if path else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, str(path))


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value
