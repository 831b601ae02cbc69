"""The user-tunable configuration, declared in YAML and validated on load.

One file (``configs/rankflow.yaml`` by default) holds every knob a user turns: where the raw data
comes from, the simulator, the warehouse's feature parameters, the training window and split,
and the path of the model config. Every section forbids unknown keys, so a typo is an error that
names the key and the file instead of a silently ignored setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.yaml_config import flatten, read_yaml, validate
from rankflow.errors import ConfigError
from rankflow.monitoring.config import MonitoringConfig
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.serving.config import ServingConfig
from rankflow.sim.config import SimulationConfig

DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "rankflow.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """Which days of labelled impressions to use and how to split them (``training_set:`` in
    configs/rankflow.yaml). Dates are UTC calendar days, both ends inclusive."""

    valid_days: int = Field(3, ge=1, description="Days right before the test days, validation")
    test_days: int = Field(3, ge=1, description="Last days of the window, test")
    start_date: date | None = Field(
        None, description="First day used (default: first day in the data)"
    )
    end_date: date | None = Field(
        None, description="Last day used, inclusive (default: last day in the data)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self


class WarehouseConfig(_Strict):
    """Parameters handed to dbt as vars."""

    ctr_prior: float = Field(0.045, gt=0, lt=1, description="Prior CTR used to smooth CTR features")
    ctr_prior_strength: float = Field(
        20.0, ge=0, description="Pseudo-impressions of the prior in smoothed CTRs"
    )
    lookback_days: int = Field(
        1, ge=0, description="Recent days an incremental build reprocesses (late data)"
    )


class TrackingConfig(_Strict):
    """Where runs are tracked (``tracking:``). The tracking URI is, first found:
    ``$MLFLOW_TRACKING_URI`` (the server profile), ``uri`` below, else the embedded default
    ``sqlite:///$RANKFLOW_HOME/mlflow/mlflow.db`` with artifacts in ``$RANKFLOW_HOME/mlflow/artifacts``."""

    uri: str | None = Field(
        None, description="Tracking URI; null = $MLFLOW_TRACKING_URI or the SQLite file"
    )
    experiment: str = Field("rankflow-ctr", min_length=1, description="MLflow experiment name")
    segment_columns: list[str] = Field(
        default_factory=lambda: ["user_segment", "device"],
        description="Test-split columns to report AUC per value of (auc_by_<col>/<value>)",
    )
    min_segment_rows: int = Field(
        1000, ge=1, description="A segment AUC on fewer test rows is flagged as unreliable"
    )
    plot_bins: int = Field(15, ge=2, le=100, description="Equal-mass bins of calibration plots")
    input_example_rows: int = Field(5, ge=1, le=100, description="Rows in the logged example")


class QualityGates(_Strict):
    """Absolute test-split gates a model must pass to become ``champion`` (null = not checked)."""

    min_auc: float | None = Field(0.6, ge=0, le=1, description="Lowest acceptable test AUC")
    max_ne: float | None = Field(
        0.99, gt=0, description="Highest test normalised entropy (1.0 = base-rate predictor)"
    )
    max_ece: float | None = Field(
        0.02, ge=0, description="Highest expected calibration error (equal-mass bins)"
    )
    calibration_ratio: tuple[float, float] | None = Field(
        (0.8, 1.25), description="[low, high] bounds of mean prediction / observed CTR"
    )
    min_auc_lift_over_baseline: float | None = Field(
        0.0, description="Test AUC minus the logistic-regression baseline's, at least"
    )

    @model_validator(mode="after")
    def _ordered(self) -> QualityGates:
        if self.calibration_ratio and self.calibration_ratio[0] > self.calibration_ratio[1]:
            raise ValueError(f"calibration_ratio {list(self.calibration_ratio)}: low > high")
        return self


class ModelNames(_Strict):
    """The registered model of each model family (every trained candidate is a version)."""

    wide_deep: str = Field("rankflow-wide-deep", min_length=1)
    dcn: str = Field("rankflow-dcn", min_length=1)

    def of(self, kind: str) -> str:
        return {"wide_deep": self.wide_deep, "dcn": self.dcn}[kind]


class RegistryConfig(_Strict):
    """Registered model names, gates and who may move aliases (``registry:``).

    Every trained candidate becomes a version of its family's model (``model_names``); the
    model a scoring service loads, ``models:/<serving_model>@champion``, holds the
    ``champion`` / ``challenger`` / ``previous`` aliases."""

    model_names: ModelNames = Field(default_factory=ModelNames)
    serving_model: str = Field(
        "rankflow-ctr", min_length=1, description="Registered model holding the aliases"
    )
    select_by: Literal["auc", "logloss", "ne"] = Field(
        "auc", description="Test metric that picks the better of the gated candidates"
    )
    gates: QualityGates = Field(default_factory=QualityGates)
    when_champion_exists: Literal["register", "challenger"] = Field(
        "register",
        description="Later runs: 'register' only adds versions (promotion is the canary's); "
        "'challenger' also points the challenger alias at the better gated candidate",
    )

    @model_validator(mode="after")
    def _distinct(self) -> RegistryConfig:
        names = self.model_names
        if names.wide_deep == names.dcn:
            raise ValueError(f"model_names: wide_deep and dcn are both {names.dcn!r}")
        if self.serving_model in (names.wide_deep, names.dcn):
            raise ValueError(
                f"serving_model {self.serving_model!r} must differ from the family model names"
            )
        return self


class OfflineGateConfig(_Strict):
    """Champion vs challenger on the same fresh holdout (``canary.offline:``)."""

    auc_margin: float = Field(
        0.002, ge=0, description="Non-inferiority: lower end of the AUC difference above -margin"
    )
    logloss_margin: float = Field(
        0.001, ge=0, description="Non-inferiority: upper end of the log-loss difference below it"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap intervals")
    bootstrap_resamples: int = Field(300, ge=50, le=10_000, description="Paired resamples")
    max_ece_increase: float = Field(
        0.005, ge=0, description="Calibration guardrail: challenger ECE at most champion's + this"
    )
    blocking_gap_checks: list[str] = Field(
        default_factory=lambda: ["feature_skew", "score_skew", "freshness"],
        description="Gap checks whose latest 'fail' blocks a promotion (broken data, not drift)",
    )


class OnlineGateConfig(_Strict):
    """The canary phase's decision rule (``canary.online:``): an always-valid mSPRT on the
    difference of online CTR, valid however often it is looked at."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="Type-I error over the whole canary")
    tau: float = Field(
        0.005, gt=0, description="Mixture sd of the CTR difference (absolute CTR units)"
    )
    min_views: int = Field(2000, ge=100, description="Impressions per arm before any decision")
    max_views: int = Field(
        200_000, ge=1000, description="Horizon per arm: no evidence by then keeps the champion"
    )
    variance_reduction: Literal["cuped", "none"] = Field(
        "cuped",
        description="cuped: test the CTR difference adjusted by each user's clicks and views in "
        "the fresh window before the phase (discounts the arms' user mix); none: the raw one",
    )

    @model_validator(mode="after")
    def _ordered(self) -> OnlineGateConfig:
        if self.min_views > self.max_views:
            raise ValueError(f"min_views {self.min_views} > max_views {self.max_views}")
        return self


class CanaryConfig(_Strict):
    """Canary retraining (``canary:``): the fresh window, warm start, offline gate, the canary
    phase and its online rule. ``share`` is the simulated phase's (in-process traffic); in the
    live phase a deployed ``rankflow serve`` sends ``serving.canary_share`` to ``@challenger``."""

    def resolved_phase(self, source: str) -> Literal["simulated", "live"]:
        if self.phase != "auto":
            return self.phase
        return "simulated" if source == "simulate" else "live"

    families: list[Literal["wide_deep", "dcn"]] | None = Field(
        None, description="Families to retrain; null = the champion's family"
    )
    distill_weight: float = Field(
        0.0, ge=0, le=1, description="Weight of distillation from the champion's predictions"
    )
    window_days: int | None = Field(
        14,
        ge=3,
        description="Train on the most recent days only (the fresh window; its last "
        "training_set.test_days are the shared holdout); null = the whole training-set window",
    )
    share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of users (stable hash) the canary phase sends to the challenger",
    )
    traffic_impressions: int = Field(
        300_000,
        ge=1000,
        description="Candidate impressions the simulator offers over the "
        "canary phase (closed loop; the phase may stop earlier)",
    )
    looks: int = Field(10, ge=1, le=1000, description="Times the online rule is evaluated")
    top_k: int | None = Field(
        3, ge=1, description="Items shown per request in the canary phase (ranked positions)"
    )
    phase: Literal["auto", "simulated", "live"] = Field(
        "auto",
        description="simulated: closed-loop traffic from the simulator, in process (needs its "
        "ground truth); live: the deployed service's traffic over days, a look at every canary "
        "run (rankflow/canary/live.py; needs serving.canary_share > 0); auto: simulated for "
        "source: simulate, live for your own data",
    )
    on_gap_fail: bool = Field(
        True, description="The gap-check flow starts a canary when its verdict is 'fail'"
    )
    allow_rolled_back: bool = Field(
        False,
        description="Canary a challenger even if it is the very model (same training "
        "fingerprint) that `rankflow rollback` removed from @champion; off, the canary rejects "
        "it: a rollback is not undone by the next scheduled retrain on unchanged inputs",
    )
    seed: int = Field(0, description="Bootstrap resamples and simulated clicks")
    measure_warm_start: bool = Field(
        False,
        description="Also train a cold start at the same budget and log the comparison (one "
        "more training per canary; `rankflow demo` turns it on)",
    )
    offline: OfflineGateConfig = Field(default_factory=OfflineGateConfig)
    online: OnlineGateConfig = Field(default_factory=OnlineGateConfig)


class ScaleOutConfig(_Strict):
    """How the train step spreads its work (``scale_out:``; docs/scale-out.md)."""

    task_runner: Literal["sequential", "dask"] = Field(
        "sequential",
        description="'dask': train the model families in parallel on a local Dask cluster of "
        "processes (needs a Prefect server: PREFECT_API_URL; and a tracking server, since "
        "SQLite takes one writer); 'sequential': one after the other in the flow's process",
    )
    dask_workers: int = Field(2, ge=1, le=64, description="Dask worker processes (one thread each)")


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
    feature_service: str = Field(
        "ctr_ranker_v1",
        min_length=1,
        description="The Feast feature service (feature_repo/feature_services.py) models are "
        "trained on and served with; each model records it, and the scoring service refuses a "
        "model trained on another",
    )
    model_config_path: Path = Field(
        Path("configs/model.yaml"), description="Model config, relative to the repo root"
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    scale_out: ScaleOutConfig = Field(default_factory=ScaleOutConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    def resolved_raw_dir(self, paths: StatePaths) -> Path:
        return Path(self.raw_dir).expanduser().resolve() if self.raw_dir else paths.raw

    def resolved_model_config_path(self) -> Path:
        path = Path(self.model_config_path).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of the config, for logging as run parameters."""
        return flatten(json.loads(self.model_dump_json()))

    # What each stage takes of the config: built here, by the composition roots that hold it.
    def scoring(self) -> ScoringConfig:
        return ScoringConfig(
            serving=self.serving,
            feature_service=self.feature_service,
            model_name=self.registry.serving_model,
            tracking=self.tracking,
        )

    def train_step(self) -> TrainStepConfig:
        return TrainStepConfig(
            split=self.training_set,
            feature_service=self.feature_service,
            model_config_path=self.resolved_model_config_path(),
            tracking=self.tracking,
            registry=self.registry,
            source=self.source,
            ctr_prior=self.warehouse.ctr_prior,
            pipeline=json.loads(self.model_dump_json()),
        )

    def canary_run(self) -> CanaryRunConfig:
        return CanaryRunConfig(canary=self.canary, train=self.train_step(), scoring=self.scoring())


@dataclass(frozen=True)
class ScoringConfig:
    """What a scoring service serves with, and what reading its logs back needs: the
    ``serving:`` section, the feature service, the registered model whose aliases it follows,
    and where that registry is (``tracking:``)."""

    serving: ServingConfig
    feature_service: str
    model_name: str
    tracking: TrackingConfig


@dataclass(frozen=True)
class TrainStepConfig:
    """What the train step reads of the pipeline config.

    ``model_config_path`` is resolved; ``source`` says whether the simulator's truth exists (the
    oracle's metrics); ``ctr_prior`` is the warehouse prior the train positive rate is checked
    against. ``pipeline`` is the whole pipeline config as plain data, logged with every run
    (``rankflow.*`` params, ``config/rankflow.yaml``) so a run says what it was trained under;
    no decision reads it.
    """

    split: SplitConfig
    feature_service: str
    model_config_path: Path
    tracking: TrackingConfig
    registry: RegistryConfig
    source: Literal["simulate", "raw"]
    ctr_prior: float
    pipeline: dict[str, Any]


@dataclass(frozen=True)
class CanaryRunConfig:
    """What a canary run reads: its own section, the train step's inputs (it trains the
    challenger) and the scoring side's (its phase serves both models)."""

    canary: CanaryConfig
    train: TrainStepConfig
    scoring: ScoringConfig


def parse_config(
    data: dict[str, Any] | None,
    source: str = "<dict>",
    origins: Mapping[str, str] | None = None,
) -> RankflowConfig:
    return validate(RankflowConfig, data, source, ConfigError, origins=origins)


def load_config(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> RankflowConfig:
    """Read and validate the YAML config; ``overrides`` are dotted keys (``simulation.days``).

    An error names the file, or for an overridden key where the value came from: ``origins``
    (dotted key -> ``--impressions``, the state's record), else ``--set KEY``."""
    path = Path(path) if path else DEFAULT_CONFIG_PATH
    labels = {key: f"--set {key}" for key in overrides or {}} | dict(origins or {})
    return parse_config(read_yaml(path, ConfigError, "config", overrides), str(path), labels)
