"""The main job as plain functions: simulate -> contract check -> dbt -> Feast -> training set.

Each stage is a function the CLI, the Prefect flows and the tests call alike; this module only
sequences them, times them and writes the run summary. Stage logic lives in its own module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rankflow.config import RankflowConfig
from rankflow.paths import StatePaths

T = TypeVar("T")


@dataclass
class MainJobSummary:
    """What one run of the main job did, printed at the end and saved as JSON."""

    started_at: datetime
    state_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    summary_path: Path | None = None

    def to_json(self) -> str:
        return json.dumps(_jsonable(asdict(self)), indent=2, sort_keys=True)

    def render(self) -> str:
        lines = [f"rankflow main job - state in {self.state_dir}"]
        for stage, seconds in self.stage_seconds.items():
            lines.append(f"  {stage:<14} {seconds:7.1f} s")
        warehouse = self.details.get("warehouse", {})
        quarantine = warehouse.get("quarantine_counts") or {}
        if quarantine:
            lines.append("quarantined rows by reason:")
            lines += [f"  {reason:<28} {count}" for reason, count in sorted(quarantine.items())]
        else:
            lines.append("quarantined rows: none")
        training = self.details.get("training_set", {})
        for split, info in (training.get("splits") or {}).items():
            lines.append(
                f"training set {split:<5}: {info['rows']} rows x {info['columns']} columns, "
                f"positive rate {info['positive_rate']:.4f}, {info['start']} .. {info['end']}"
            )
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path | datetime):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


class _Timer:
    def __init__(self, summary: MainJobSummary) -> None:
        self.summary = summary

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.summary.stage_seconds[name] = round(time.perf_counter() - start, 2)

    def run(self, name: str, fn: Callable[[], T]) -> T:
        with self.stage(name):
            result = fn()
        self.summary.details[name] = _jsonable(result)
        return result


# --------------------------------------------------------------------------------------------
# Stages (each callable on its own: CLI commands, Prefect tasks and tests use them)
# --------------------------------------------------------------------------------------------


def simulate_step(config: RankflowConfig, paths: StatePaths):
    from rankflow.data.simulate import simulate

    return simulate(config.simulation, config.resolved_raw_dir(paths), paths.truth)


def validate_step(config: RankflowConfig, paths: StatePaths):
    from rankflow.data.contract import validate_raw

    return validate_raw(config.resolved_raw_dir(paths))


def build_warehouse_step(
    config: RankflowConfig,
    paths: StatePaths,
    *,
    full_refresh: bool = False,
    as_of: datetime | None = None,
):
    from rankflow.warehouse.build import build_warehouse

    return build_warehouse(
        paths,
        as_of=as_of,
        full_refresh=full_refresh,
        vars=config.warehouse.model_dump(),
        raw_dir=config.resolved_raw_dir(paths),
    )


@dataclass
class FeatureStoreStepResult:
    apply: Any
    materialize: Any


def feature_store_step(paths: StatePaths) -> FeatureStoreStepResult:
    """``feast apply`` then ``materialize-incremental`` up to the exports' as-of time.

    The end of the load is the newest feature timestamp dbt built, not the wall clock: the data
    may be a backfill or a simulation that ended days ago.
    """
    from rankflow.features.store import apply_feature_repo, exports_as_of, materialize_incremental

    applied = apply_feature_repo(paths)
    materialized = materialize_incremental(paths, exports_as_of(paths))
    return FeatureStoreStepResult(apply=applied, materialize=materialized)


def training_set_step(config: RankflowConfig, paths: StatePaths):
    from rankflow.features.training_set import build_training_set

    return build_training_set(paths, config.training_set)


# --------------------------------------------------------------------------------------------
# The main job
# --------------------------------------------------------------------------------------------


def run_main_job(config: RankflowConfig, paths: StatePaths) -> MainJobSummary:
    """The feature half of the main job without Prefect, in-process: simulate (if configured)
    -> contract check -> dbt build -> Feast -> training set.

    ``rankflow run`` runs the Prefect ``pipeline`` flow (these stages as tasks, then training);
    this function is for notebooks and tests that want a built state dir without a server.
    """
    summary = MainJobSummary(started_at=datetime.now(UTC), state_dir=paths.root)
    summary.details["config"] = config.flat()
    timer = _Timer(summary)
    if config.source == "simulate":
        timer.run("simulate", lambda: simulate_step(config, paths))
    timer.run("validate", lambda: validate_step(config, paths))
    timer.run("warehouse", lambda: build_warehouse_step(config, paths))
    timer.run("feature_store", lambda: feature_store_step(paths))
    with timer.stage("training_set"):
        training_set = training_set_step(config, paths)
    summary.details["training_set"] = _jsonable(training_set.describe())

    run_dir = paths.runs / summary.started_at.strftime("%Y%m%dT%H%M%SZ")
    run_dir.mkdir(parents=True, exist_ok=True)
    summary.summary_path = run_dir / "summary.json"
    summary.summary_path.write_text(summary.to_json())
    return summary
