"""The train step: training set -> Wide & Deep, DCN and the LR baseline -> evaluate -> log -> register.

:func:`train_and_register` is what the ``train`` flow (and any caller) runs:

1. the point-in-time training set (built through the feature service unless given);
2. a fingerprint per model family of everything that decides the model: the training-set
   contents, the model config, the family and the code that trains and logs it (``models/``,
   this module, the pyfunc wrapper).
   A family whose fingerprint already has a registry version is not trained or registered
   again (an identical re-run adds nothing); one whose run was logged but not registered
   (a crash in between) is registered from that run;
3. training with checkpoints under ``$RANKFLOW_HOME/training/<kind>/<fingerprint>``: a process
   killed mid-training resumes there on the next run, and the result equals an uninterrupted
   run's;
4. evaluation on the test split: AUC, logloss, NE, calibration, AUC per segment, the LR
   baseline's figures and, on simulated data, the oracle's (true p_click by event_id);
5. one MLflow run per model (and one for the baseline): flattened configs as params,
   per-epoch metrics (step = epoch), test metrics, artifacts (feature spec, configs,
   checkpoint, ROC and calibration plots, a data profile) and lineage tags; the model as a
   pyfunc;
6. registration of both families; on the first run with no champion, the better candidate
   that passes the absolute gates becomes ``champion`` of the serving model. Later runs
   only register (``registry.when_champion_exists: challenger`` also moves ``challenger``);
   promotion is the canary's.

Nothing moves an alias before both candidates are logged, registered and gated, so a crash
anywhere leaves the aliases as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from rankflow.config import RankflowConfig
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.registry.gates import (
    CHALLENGER,
    CHAMPION,
    KIND_TITLES,
    TAG_FAMILY_VERSION,
    TAG_FINGERPRINT,
    TAG_GATES,
    TAG_KIND,
    AliasState,
    Candidate,
    GateResult,
    alias_version,
    check_gates,
    comparison,
    ensure_registered_model,
    find_version,
    metric_tags,
    pick_best,
    promote_champion,
    record_note,
    register_version,
    set_alias,
    version_description,
)
from rankflow.tracking.setup import Tracking, lineage_tags, setup_tracking

if TYPE_CHECKING:
    from models.config import ModelConfig
    from rankflow.features.training_set import TrainingSet

log = logging.getLogger(__name__)

MODEL_KINDS: tuple[str, ...] = ("wide_deep", "dcn")
BASELINE_KIND = "lr_baseline"
TEST_PREFIX = "test_"
TAG_MODEL_URI = "rankflow.model_uri"
TAG_STATUS = "rankflow.status"
# Code whose change may change a trained model, its metrics or its logged form (hashed into
# the fingerprint); the training set's own contents are hashed separately.
CODE_PATHS = ("models", "rankflow/training", "rankflow/tracking/pyfunc.py")
MAX_PARAM_LENGTH = 6000

StepHook = Callable[[str, int, float], None]


# --------------------------------------------------------------------------------------------
# Outcome
# --------------------------------------------------------------------------------------------


@dataclass
class CandidateOutcome:
    """One model family's result: its registry version, test metrics and gate verdict."""

    kind: str
    registered_model: str
    version: str
    run_id: str | None
    fingerprint: str
    metrics: dict[str, float]
    gate: GateResult
    reused: bool  # an identical earlier run's version; nothing trained or registered now
    resumed: bool = False  # training continued from a checkpoint of an interrupted run
    checkpoint_path: Path | None = None
    train_seconds: float | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_model}/{self.version}"

    def candidate(self, source: str, model_id: str | None) -> Candidate:
        return Candidate(
            kind=self.kind,
            name=self.registered_model,
            version=self.version,
            run_id=self.run_id,
            source=source,
            model_id=model_id,
            fingerprint=self.fingerprint,
            metrics=self.metrics,
            gate=self.gate,
        )


@dataclass
class TrainOutcome:
    """What :func:`train_and_register` did, and where to look (JSON-able via ``to_dict``)."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    data_fingerprint: str
    candidates: dict[str, CandidateOutcome]
    serving_model: str
    aliases: dict[str, str]  # serving model alias -> version, after this step
    promoted: str | None  # alias this step moved ("champion" / "challenger"), if any
    decision: str  # why the aliases are where they are
    baseline_metrics: dict[str, float] | None = None
    baseline_run_id: str | None = None
    seconds: float = 0.0
    champion: dict[str, Any] | None = None  # kind, version, metrics of the champion

    @property
    def champion_version(self) -> str | None:
        return self.aliases.get(CHAMPION)

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.serving_model}@{CHAMPION}"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "tracking_uri": self.tracking_uri,
                "experiment": {"name": self.experiment_name, "id": self.experiment_id},
                "data_fingerprint": self.data_fingerprint,
                "candidates": {
                    kind: {
                        "registered_model": c.registered_model,
                        "version": c.version,
                        "model_uri": c.model_uri,
                        "run_id": c.run_id,
                        "fingerprint": c.fingerprint,
                        "metrics": c.metrics,
                        "gates": c.gate.to_dict(),
                        "reused": c.reused,
                        "resumed": c.resumed,
                        "checkpoint_path": c.checkpoint_path,
                        "train_seconds": c.train_seconds,
                    }
                    for kind, c in self.candidates.items()
                },
                "baseline": {"run_id": self.baseline_run_id, "metrics": self.baseline_metrics},
                "serving_model": self.serving_model,
                "aliases": self.aliases,
                "promoted": self.promoted,
                "decision": self.decision,
                "champion": self.champion,
                "champion_uri": self.champion_uri,
                "seconds": self.seconds,
            }
        )

    def render(self) -> str:
        lines = [f"MLflow: {self.tracking_uri} (experiment {self.experiment_name!r})"]
        for kind, c in self.candidates.items():
            how = "existing, identical inputs" if c.reused else "new"
            if c.resumed:
                how += ", resumed from checkpoint"
            lines.append(
                f"  {KIND_TITLES.get(kind, kind):<12} {c.registered_model} v{c.version} ({how}): "
                f"test AUC {_num(c.metrics.get('auc'))}, logloss {_num(c.metrics.get('logloss'))}"
                f", NE {_num(c.metrics.get('ne'))} - gates {'passed' if c.gate.passed else 'FAILED'}"
            )
        if self.baseline_metrics:
            lines.append(f"  LR baseline  test AUC {_num(self.baseline_metrics.get('auc'))}")
        if self.aliases:
            shown = ", ".join(f"@{a} = v{v}" for a, v in sorted(self.aliases.items()))
            lines.append(f"  {self.serving_model}: {shown}")
        else:
            lines.append(f"  {self.serving_model}: no aliases")
        lines.append(f"  {self.decision}")
        if self.champion:
            metrics = self.champion.get("metrics") or {}
            shown = ", ".join(f"{k} {_num(v)}" for k, v in metrics.items())
            lines.append(
                f"  champion: {self.serving_model} v{self.champion['version']} "
                f"({KIND_TITLES.get(self.champion.get('kind') or '', '?')}): test {shown}"
            )
        if self.tracking_uri.startswith("sqlite:"):
            lines.append(
                "  MLflow UI: make mlflow-ui, then open "
                f"http://127.0.0.1:5000/#/models/{self.serving_model}"
            )
        if self.champion_version:
            lines.append(f"  score with mlflow.pyfunc.load_model({self.champion_uri!r})")
        return "\n".join(lines)


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.4f}" if math.isfinite(number) else "n/a"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def data_fingerprint(training_set: TrainingSet) -> str:
    """Hash of the training set: every split's columns, dtypes and values, and its schema."""
    from rankflow.features.training_set import SPLITS

    meta = {
        "feature_service": training_set.feature_service,
        "feature_types": dict(training_set.feature_types),
        "window": str(training_set.window),
        "splits": {name: str(w) for name, w in training_set.split_windows.items()},
    }
    parts = [json.dumps(meta, sort_keys=True).encode()]
    for name in SPLITS:
        frame = training_set.split(name)
        parts.append(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
        parts.append(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return _digest(*parts)


def code_fingerprint(code_paths: tuple[str, ...] = CODE_PATHS) -> str:
    """Hash of the Python sources that make and log a model (committed or not).

    ``models/`` and this step plus the pyfunc wrapper: editing the CLI or a flow does not make
    an identical re-run train again, editing the training loop or the metrics does.
    """
    parts = []
    for entry in code_paths:
        path = REPO_ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            parts.append(str(file.relative_to(REPO_ROOT)).encode())
            parts.append(file.read_bytes())
    return _digest(*parts)


def model_fingerprint(kind: str, data_fp: str, code_fp: str, model_config: ModelConfig) -> str:
    """What decides a trained model: family, data, model config (bar the progress bar), code."""
    config = {k: v for k, v in model_config.flat().items() if k != "training.progress"}
    blob = json.dumps(
        {"kind": kind, "data": data_fp, "code": code_fp, "config": config},
        sort_keys=True,
        default=str,
    )
    return _digest(blob.encode())


# --------------------------------------------------------------------------------------------
# Evaluation helpers
# --------------------------------------------------------------------------------------------


def load_truth(config: RankflowConfig, paths: StatePaths, frame: pd.DataFrame) -> pd.Series | None:
    """True p_click of ``frame``'s rows (simulated data only), indexed by event_id; else None.

    None when the data is not the simulator's, or the truth files do not cover every row
    (e.g. the raw data was replaced after a simulation).
    """
    folder = paths.truth / "impressions"
    if config.source != "simulate" or not folder.is_dir() or frame.empty:
        return None
    import pyarrow as pa
    import pyarrow.dataset as ds

    ids = pa.array(frame["event_id"].astype(str).unique())
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["event_id", "p_click"], filter=ds.field("event_id").isin(ids))
    truth = table.to_pandas().drop_duplicates("event_id").set_index("event_id")["p_click"]
    if len(truth) < len(ids):
        log.warning(
            "truth in %s covers %d of %d test impressions: no oracle metrics",
            folder,
            len(truth),
            len(ids),
        )
        return None
    return truth


def evaluate_predictions(
    probs: np.ndarray,
    frame: pd.DataFrame,
    *,
    truth: pd.Series | None,
    baseline: np.ndarray | None,
    segment_columns: list[str],
) -> dict[str, float]:
    """``models.metrics.evaluate`` plus AUC per value of every configured segment column."""
    from models.metrics import evaluate

    metrics = evaluate(probs, frame, truth=truth, baseline=baseline)
    for column in segment_columns:
        if column not in frame.columns:
            log.warning("segment column %r is not in the test split; skipped", column)
            continue
        per_segment = evaluate(probs, frame, segment_col=column)
        metrics.update({k: v for k, v in per_segment.items() if k.startswith("auc_by_")})
    return metrics


def data_profile(training_set: TrainingSet) -> dict[str, Any]:
    """Per split: shape, positive rate, days; per column of train: type, nulls, spread."""
    profile: dict[str, Any] = {"training_set": training_set.describe(), "columns": {}}
    train = training_set.train
    for name in train.columns:
        column = train[name]
        entry: dict[str, Any] = {
            "dtype": str(column.dtype),
            "feature_type": training_set.feature_types.get(name),
            "null_share": {
                split: float(training_set.split(split)[name].isna().mean())
                if len(training_set.split(split))
                else None
                for split in ("train", "valid", "test")
            },
        }
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = pd.to_numeric(column, errors="coerce").dropna().astype("float64")
            if len(values):
                quantiles = values.quantile([0.01, 0.5, 0.99]).tolist()
                entry.update(
                    mean=float(values.mean()),
                    std=float(values.std(ddof=0)),
                    min=float(values.min()),
                    p01=quantiles[0],
                    p50=quantiles[1],
                    p99=quantiles[2],
                    max=float(values.max()),
                )
            entry["distinct"] = int(column.nunique(dropna=True))
        elif pd.api.types.is_datetime64_any_dtype(column):
            entry.update(min=str(column.min()), max=str(column.max()))
        else:
            counts = column.astype(object).value_counts(dropna=True)
            entry["distinct"] = len(counts)
            entry["top"] = {str(k): float(v / len(column)) for k, v in counts.head(5).items()}
        profile["columns"][str(name)] = entry
    return profile


def save_plots(
    folder: Path,
    label: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    title: str,
    bins: int,
) -> list[Path]:
    """ROC curves and a reliability diagram (equal-mass bins) as PNGs; their paths.

    Uses matplotlib's Agg canvas directly (no pyplot): no display, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(label, dtype=np.float64)
    two_classes = y.size > 0 and 0 < y.sum() < y.size

    roc = Figure(figsize=(5.5, 5), dpi=110)
    FigureCanvasAgg(roc)
    ax = roc.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, probs in curves.items():
        if not two_classes:
            break
        fpr, tpr, _ = roc_curve(y, probs)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, probs):.4f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC - {title}")
    ax.legend(loc="lower right", fontsize=8)
    roc_path = folder / "roc.png"
    roc.savefig(roc_path)

    cal = Figure(figsize=(5.5, 5), dpi=110)
    FigureCanvasAgg(cal)
    ax = cal.add_subplot()
    top = 0.0
    for name, probs in curves.items():
        p = np.asarray(probs, dtype=np.float64)
        if p.size == 0:
            continue
        order = np.argsort(p, kind="stable")
        chunks = [c for c in np.array_split(order, min(bins, p.size)) if c.size]
        mean_p = np.array([p[c].mean() for c in chunks])
        mean_y = np.array([y[c].mean() for c in chunks])
        top = max(top, float(mean_p.max()), float(mean_y.max()))
        ax.plot(mean_p, mean_y, marker="o", markersize=3, label=name)
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="calibrated")
    ax.set(
        xlabel="mean predicted CTR (equal-mass bins)",
        ylabel="observed CTR",
        title=f"Calibration - {title}",
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend(loc="upper left", fontsize=8)
    cal_path = folder / "calibration.png"
    cal.savefig(cal_path)
    return [roc_path, cal_path]


# --------------------------------------------------------------------------------------------
# MLflow run helpers
# --------------------------------------------------------------------------------------------


def _params(config: RankflowConfig, model_config: ModelConfig, kind: str) -> dict[str, str]:
    params = {"kind": kind}
    params.update({f"rankflow.{k}": _param_value(v) for k, v in config.flat().items()})
    params.update({f"model.{k}": _param_value(v) for k, v in model_config.flat().items()})
    return params


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    batch = [
        Metric(key=k, value=float(v), timestamp=stamp, step=step)
        for k, v in metrics.items()
        if v is not None
    ]
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start : start + 500])


def _log_history(
    client: Any, run_id: str, history: list[dict[str, float]], per_epoch: bool
) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    batch = []
    for entry in history:
        step = round(entry["epoch"]) if per_epoch else int(entry["step"])
        for key in ("train_loss", "valid_logloss", "valid_auc"):
            if key in entry:
                batch.append(Metric(key=key, value=float(entry[key]), timestamp=stamp, step=step))
    for start in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[start : start + 500])


def _runs_with(tracking: Tracking, fingerprint: str, status: str | None = None) -> list[Any]:
    filters = [f"tags.`{TAG_FINGERPRINT}` = '{fingerprint}'"]
    if status:
        filters.append(f"attributes.status = '{status}'")
    return list(
        tracking.client.search_runs(
            [tracking.experiment_id],
            filter_string=" and ".join(filters),
            order_by=["attributes.start_time DESC"],
        )
    )


def _close_stale_runs(tracking: Tracking, fingerprint: str) -> None:
    """Runs of this fingerprint left RUNNING by a killed process: mark them FAILED."""
    for run in _runs_with(tracking, fingerprint, "RUNNING"):
        log.warning("run %s was interrupted (still RUNNING); marking it FAILED", run.info.run_id)
        tracking.client.set_tag(run.info.run_id, TAG_STATUS, "interrupted")
        tracking.client.set_terminated(run.info.run_id, status="FAILED")


def _finished_run(tracking: Tracking, fingerprint: str) -> Any | None:
    """A finished run of this fingerprint that logged its model (registration may be missing)."""
    for run in _runs_with(tracking, fingerprint, "FINISHED"):
        if run.data.tags.get(TAG_MODEL_URI):
            return run
    return None


def _test_metrics_of(run: Any) -> dict[str, float]:
    return {
        key.removeprefix(TEST_PREFIX): float(value)
        for key, value in run.data.metrics.items()
        if key.startswith(TEST_PREFIX)
    }


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    config: RankflowConfig
    paths: StatePaths
    tracking: Tracking
    model_config: ModelConfig
    training_set: TrainingSet
    data_fp: str
    code_fp: str
    lineage: dict[str, str]
    scratch: Path
    truth: pd.Series | None = None
    baseline_probs: np.ndarray | None = None
    baseline_metrics: dict[str, float] | None = None
    baseline_run_id: str | None = None
    profile_file: Path | None = None
    config_files: list[Path] = field(default_factory=list)


def train_and_register(
    config: RankflowConfig,
    paths: StatePaths,
    *,
    training_set: TrainingSet | None = None,
    model_config: ModelConfig | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    on_train_step: StepHook | None = None,
) -> TrainOutcome:
    """Train, evaluate, log and register Wide & Deep and DCN; name a first champion.

    ``training_set``: a built training set (default: build it through the feature service).
    ``model_config``: the model config (default: ``config.model_config_path`` with
    ``model_overrides`` applied). ``on_train_step(kind, step, loss)`` runs after every
    training step (progress reporting; tests use it to kill the process mid-training).
    """
    from models.config import load_model_config

    started = time.perf_counter()
    tracking = setup_tracking(config, paths)
    if model_config is None:
        model_config = load_model_config(
            config.resolved_model_config_path(), dict(model_overrides or {})
        )
    elif model_overrides:
        model_config = model_config.with_overrides(dict(model_overrides))
    if training_set is None:
        from rankflow.features.training_set import build_training_set

        training_set = build_training_set(paths, config.training_set)

    client = tracking.client
    names = config.registry.model_names
    for kind in MODEL_KINDS:
        ensure_registered_model(
            client,
            names.of(kind),
            f"Every trained rankflow {KIND_TITLES[kind]} CTR model (one version per distinct "
            f"input fingerprint). The served model is `{config.registry.serving_model}`.",
            {TAG_KIND: kind},
        )
    ensure_registered_model(
        client,
        config.registry.serving_model,
        "The rankflow CTR model the scoring service loads: `@champion` serves, `@challenger` "
        "gets the canary share, `@previous` is the rollback. Each version's description "
        "says what it is and why an alias moved to it.",
        {"rankflow.role": "serving"},
    )

    data_fp = data_fingerprint(training_set)
    code_fp = code_fingerprint()
    fingerprints = {
        kind: model_fingerprint(kind, data_fp, code_fp, model_config) for kind in MODEL_KINDS
    }
    log.info("data fingerprint %s, code fingerprint %s", data_fp, code_fp)

    with tempfile.TemporaryDirectory(prefix="rankflow-train-") as tmp:
        ctx = _Context(
            config=config,
            paths=paths,
            tracking=tracking,
            model_config=model_config,
            training_set=training_set,
            data_fp=data_fp,
            code_fp=code_fp,
            lineage=lineage_tags(config, paths, training_set),
            scratch=Path(tmp),
        )
        outcomes: dict[str, CandidateOutcome] = {}
        sources: dict[str, tuple[str, str | None]] = {}
        for kind in MODEL_KINDS:
            name = names.of(kind)
            fingerprint = fingerprints[kind]
            existing = find_version(client, name, fingerprint)
            if existing is None:
                run = _finished_run(tracking, fingerprint)
                if run is not None:
                    log.info("%s: run %s was logged but not registered", kind, run.info.run_id)
                    existing = _register_from_run(ctx, kind, fingerprint, run)
            if existing is not None:
                outcomes[kind] = _reused(ctx, kind, existing)
                sources[kind] = (existing.source, getattr(existing, "model_id", None))
                continue
            _prepare_shared(ctx)
            outcome, source = _train_log_register(ctx, kind, fingerprint, on_train_step)
            outcomes[kind] = outcome
            sources[kind] = source

    candidates = [outcomes[k].candidate(*sources[k]) for k in MODEL_KINDS]
    promoted, decision = _decide(config, client, candidates)
    aliases = AliasState.read(client, config.registry.serving_model).aliases
    champion = _champion_info(client, config.registry.serving_model)
    outcome = TrainOutcome(
        tracking_uri=tracking.uri,
        experiment_name=tracking.experiment_name,
        experiment_id=tracking.experiment_id,
        data_fingerprint=data_fp,
        candidates=outcomes,
        serving_model=config.registry.serving_model,
        aliases=aliases,
        promoted=promoted,
        decision=decision,
        baseline_metrics=ctx.baseline_metrics,
        baseline_run_id=ctx.baseline_run_id,
        seconds=round(time.perf_counter() - started, 2),
        champion=champion,
    )
    log.info("train step done in %.1f s: %s", outcome.seconds, decision)
    return outcome


def _prepare_shared(ctx: _Context) -> None:
    """Once per step, before the first model is trained: truth, baseline, profile, configs."""
    if ctx.profile_file is not None:
        return
    ts = ctx.training_set
    ctx.truth = load_truth(ctx.config, ctx.paths, ts.test)

    files = ctx.scratch / "shared"
    files.mkdir(parents=True, exist_ok=True)
    ctx.profile_file = files / "data_profile.json"
    ctx.profile_file.write_text(json.dumps(_jsonable(data_profile(ts)), indent=1, default=str))
    config_dir = files / "config"
    config_dir.mkdir()
    (config_dir / "rankflow.yaml").write_text(
        yaml.safe_dump(json.loads(ctx.config.model_dump_json()), sort_keys=False)
    )
    (config_dir / "model.yaml").write_text(
        yaml.safe_dump(ctx.model_config.to_dict(), sort_keys=False)
    )
    ctx.config_files = [config_dir / "rankflow.yaml", config_dir / "model.yaml"]
    _train_baseline(ctx)


def _train_baseline(ctx: _Context) -> None:
    """The logistic-regression floor: its test predictions feed the models' gap metrics."""
    import mlflow

    from models.baseline import train_logistic_regression

    ts = ctx.training_set
    started = time.perf_counter()
    baseline = train_logistic_regression(ts.train, ts.feature_types, ctx.model_config)
    seconds = time.perf_counter() - started
    ctx.baseline_probs = baseline.predict_proba(ts.test)
    ctx.baseline_metrics = evaluate_predictions(
        ctx.baseline_probs,
        ts.test,
        truth=ctx.truth,
        baseline=None,
        segment_columns=ctx.config.tracking.segment_columns,
    )
    fingerprint = model_fingerprint(BASELINE_KIND, ctx.data_fp, ctx.code_fp, ctx.model_config)
    _close_stale_runs(ctx.tracking, fingerprint)
    done = _runs_with(ctx.tracking, fingerprint, "FINISHED")
    if done:
        ctx.baseline_run_id = done[0].info.run_id
        return
    tags = {
        **ctx.lineage,
        TAG_KIND: BASELINE_KIND,
        TAG_FINGERPRINT: fingerprint,
        "rankflow.data_fingerprint": ctx.data_fp,
        "rankflow.code_fingerprint": ctx.code_fp,
    }
    with mlflow.start_run(
        experiment_id=ctx.tracking.experiment_id,
        run_name=f"lr_baseline-{fingerprint[:8]}",
        tags=tags,
        nested=mlflow.active_run() is not None,
        description="Logistic-regression baseline (one-hot ids + dense features): the floor.",
    ) as run:
        client = ctx.tracking.client
        params = {"kind": BASELINE_KIND}
        params.update({f"model.{k}": _param_value(v) for k, v in ctx.model_config.flat().items()})
        mlflow.log_params(params)
        _log_metrics(
            client,
            run.info.run_id,
            {
                **{f"{TEST_PREFIX}{k}": v for k, v in ctx.baseline_metrics.items()},
                "train_seconds": seconds,
            },
        )
        curves = {"LR baseline": ctx.baseline_probs}
        if ctx.truth is not None:
            curves["oracle (true p_click)"] = ctx.truth.reindex(ts.test["event_id"]).to_numpy()
        plots = save_plots(
            ctx.scratch / "plots-baseline",
            ts.test["label"].to_numpy(),
            curves,
            title="LR baseline, test split",
            bins=ctx.config.tracking.plot_bins,
        )
        for plot in plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        assert ctx.profile_file is not None
        mlflow.log_artifact(str(ctx.profile_file), artifact_path="data")
        ctx.baseline_run_id = run.info.run_id


def _train_log_register(
    ctx: _Context, kind: str, fingerprint: str, on_train_step: StepHook | None
) -> tuple[CandidateOutcome, tuple[str, str | None]]:
    import mlflow

    from models.scoring import Scorer
    from models.train import train_model
    from rankflow.tracking.pyfunc import log_pyfunc_model

    ts = ctx.training_set
    config = ctx.config
    name = config.registry.model_names.of(kind)
    checkpoint_dir = ctx.paths.root / "training" / kind / fingerprint
    hook = None
    if on_train_step is not None:

        def hook(step: int, loss: float) -> None:
            on_train_step(kind, step, loss)

    started = time.perf_counter()
    result = train_model(
        kind,  # type: ignore[arg-type]
        ts.train,
        ts.valid,
        ts.feature_types,
        ctx.model_config,
        checkpoint_dir=checkpoint_dir,
        resume=True,
        step_callback=hook,
    )
    train_seconds = time.perf_counter() - started
    scorer = Scorer.from_checkpoint(result.checkpoint_path)
    probs = scorer.predict_proba(ts.test)
    metrics = evaluate_predictions(
        probs,
        ts.test,
        truth=ctx.truth,
        baseline=ctx.baseline_probs,
        segment_columns=config.tracking.segment_columns,
    )
    gate = check_gates(metrics, config.registry.gates)

    _close_stale_runs(ctx.tracking, fingerprint)
    title = KIND_TITLES[kind]
    tags = {
        **ctx.lineage,
        TAG_KIND: kind,
        TAG_FINGERPRINT: fingerprint,
        TAG_GATES: "passed" if gate.passed else "failed",
        "rankflow.data_fingerprint": ctx.data_fp,
        "rankflow.code_fingerprint": ctx.code_fp,
        "rankflow.resumed": str(result.resumed).lower(),
    }
    client = ctx.tracking.client
    with mlflow.start_run(
        experiment_id=ctx.tracking.experiment_id,
        run_name=f"{kind}-{fingerprint[:8]}",
        tags=tags,
        nested=mlflow.active_run() is not None,
        description=f"{title} CTR model on {ts.window}; {gate.summary()}",
    ) as run:
        run_id = run.info.run_id
        mlflow.log_params(_params(config, ctx.model_config, kind))
        per_epoch = ctx.model_config.training.eval_every_steps is None
        _log_history(client, run_id, result.history, per_epoch)
        final = {f"{TEST_PREFIX}{k}": v for k, v in metrics.items()}
        final.update({f"best_valid_{k}": v for k, v in result.best_metrics.items()})
        final.update(
            train_seconds=train_seconds,
            train_rows=float(len(ts.train)),
            valid_rows=float(len(ts.valid)),
            test_rows=float(len(ts.test)),
        )
        _log_metrics(client, run_id, final)

        files = ctx.scratch / kind
        files.mkdir(parents=True, exist_ok=True)
        (files / "feature_spec.json").write_text(scorer.spec.to_json())
        (files / "test_metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1))
        (files / "history.json").write_text(json.dumps(_jsonable(result.history), indent=1))
        (files / "gates.json").write_text(json.dumps(gate.to_dict(), indent=1))
        (files / "training_set.json").write_text(json.dumps(ts.describe(), indent=1))
        mlflow.log_artifact(str(files / "feature_spec.json"))
        for file in ("test_metrics.json", "history.json", "gates.json"):
            mlflow.log_artifact(str(files / file), artifact_path="metrics")
        for file in ctx.config_files:
            mlflow.log_artifact(str(file), artifact_path="config")
        assert ctx.profile_file is not None
        mlflow.log_artifact(str(ctx.profile_file), artifact_path="data")
        mlflow.log_artifact(str(files / "training_set.json"), artifact_path="data")
        mlflow.log_artifacts(str(result.checkpoint_path), artifact_path="checkpoint")

        curves = {title: probs}
        if ctx.baseline_probs is not None:
            curves["LR baseline"] = ctx.baseline_probs
        if ctx.truth is not None:
            curves["oracle (true p_click)"] = ctx.truth.reindex(ts.test["event_id"]).to_numpy()
        for plot in save_plots(
            files / "plots",
            ts.test["label"].to_numpy(),
            curves,
            title=f"{title}, test split",
            bins=config.tracking.plot_bins,
        ):
            mlflow.log_artifact(str(plot), artifact_path="plots")

        info = log_pyfunc_model(
            result.checkpoint_path,
            example_frame=ts.test,
            example_rows=config.tracking.input_example_rows,
            metadata={"rankflow_fingerprint": fingerprint},
            tags={TAG_KIND: kind, TAG_FINGERPRINT: fingerprint},
        )
        # Marks the run as complete enough to register from, should registration not happen.
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)

    version = register_version(
        client,
        name,
        source=info.model_uri,
        run_id=run_id,
        model_id=info.model_id,
        fingerprint=fingerprint,
        tags=_version_tags(ctx, kind, metrics, gate),
        description=version_description(
            kind,
            metrics,
            gate,
            data_window=str(ts.window),
            feature_service=ts.feature_service,
            fingerprint=fingerprint,
            run_id=run_id,
            test_window=str(ts.split_windows["test"]),
        ),
    )
    log.info("%s: registered %s v%s (%s)", kind, name, version.version, gate.summary())
    outcome = CandidateOutcome(
        kind=kind,
        registered_model=name,
        version=str(version.version),
        run_id=run_id,
        fingerprint=fingerprint,
        metrics=metrics,
        gate=gate,
        reused=False,
        resumed=result.resumed,
        checkpoint_path=result.checkpoint_path,
        train_seconds=round(train_seconds, 2),
    )
    return outcome, (version.source, getattr(version, "model_id", None) or info.model_id)


def _version_tags(
    ctx: _Context, kind: str, metrics: Mapping[str, float], gate: GateResult
) -> dict[str, str]:
    ts = ctx.training_set
    tags = {
        TAG_KIND: kind,
        TAG_GATES: "passed" if gate.passed else "failed: " + "; ".join(gate.failures),
        "rankflow.feature_service": ts.feature_service,
        "rankflow.data_window": str(ts.window),
        "rankflow.test_window": str(ts.split_windows["test"]),
        "rankflow.data_fingerprint": ctx.data_fp,
    }
    for key in ("rankflow.git_sha", "rankflow.simulator_seed", "rankflow.dbt_manifest_sha256"):
        if key in ctx.lineage:
            tags[key] = ctx.lineage[key]
    tags.update(metric_tags(metrics))
    return {k: v[:5000] for k, v in tags.items()}


def _register_from_run(ctx: _Context, kind: str, fingerprint: str, run: Any) -> Any:
    """Register the model a finished run logged (its process died before registering)."""
    metrics = _test_metrics_of(run)
    gate = check_gates(metrics, ctx.config.registry.gates)
    model_uri = run.data.tags[TAG_MODEL_URI]
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    ts = ctx.training_set
    return register_version(
        ctx.tracking.client,
        ctx.config.registry.model_names.of(kind),
        source=model_uri,
        run_id=run.info.run_id,
        model_id=model_id,
        fingerprint=fingerprint,
        tags=_version_tags(ctx, kind, metrics, gate),
        description=version_description(
            kind,
            metrics,
            gate,
            data_window=str(ts.window),
            feature_service=ts.feature_service,
            fingerprint=fingerprint,
            run_id=run.info.run_id,
            test_window=str(ts.split_windows["test"]),
        ),
    )


def _reused(ctx: _Context, kind: str, version: Any) -> CandidateOutcome:
    """An existing version with this fingerprint: its run's metrics, gates re-checked."""
    metrics: dict[str, float] = {}
    if version.run_id:
        metrics = _test_metrics_of(ctx.tracking.client.get_run(version.run_id))
    log.info(
        "%s: identical inputs already registered as %s v%s; not training again",
        kind,
        version.name,
        version.version,
    )
    return CandidateOutcome(
        kind=kind,
        registered_model=version.name,
        version=str(version.version),
        run_id=version.run_id,
        fingerprint=version.tags.get(TAG_FINGERPRINT, ""),
        metrics=metrics,
        gate=check_gates(metrics, ctx.config.registry.gates),
        reused=True,
    )


def _serving_version(client: Any, serving: str, best: Candidate, why: str) -> str:
    """The serving model's version of ``best`` (registered now unless it already is)."""
    existing = find_version(client, serving, best.fingerprint)
    if existing is not None:
        return str(existing.version)
    family = client.get_model_version(best.name, best.version)
    tags = {k: v for k, v in family.tags.items() if k != TAG_FINGERPRINT}
    tags[TAG_FAMILY_VERSION] = f"{best.name}/{best.version}"
    description = (family.description or "") + f"\n\nSame model as `{best.name}` v{best.version}."
    mv = register_version(
        client,
        serving,
        source=best.source,
        run_id=best.run_id,
        model_id=best.model_id,
        fingerprint=best.fingerprint,
        tags=tags,
        description=description.strip(),
    )
    record_note(client, best.name, best.version, f"registered as {serving} v{mv.version}: {why}")
    return str(mv.version)


def _decide(
    config: RankflowConfig, client: Any, candidates: list[Candidate]
) -> tuple[str | None, str]:
    """Move an alias if this is the first run (champion) or configured (challenger)."""
    registry = config.registry
    serving = registry.serving_model
    best = pick_best(candidates, registry.select_by)
    compared = comparison(candidates, registry.select_by)
    champion = alias_version(client, serving, CHAMPION)

    if champion is None:
        if best is None:
            failures = "; ".join(
                f"{c.kind}: {', '.join(c.gate.failures)}" for c in candidates if not c.gate.passed
            )
            return None, f"no champion: no candidate passed the quality gates ({failures})"
        reason = (
            f"first champion: {KIND_TITLES.get(best.kind, best.kind)} ({best.name} "
            f"v{best.version}) passed the quality gates and has the best test "
            f"{registry.select_by} of [{compared}]"
        )
        version = _serving_version(client, serving, best, reason)
        promote_champion(client, serving, version, reason)
        return CHAMPION, f"@{CHAMPION} -> {serving} v{version}: {reason}"

    kept = (
        f"champion stays {serving} v{champion.version} "
        f"({champion.tags.get(TAG_KIND, '?')}); promotion is the canary's job"
    )
    if registry.when_champion_exists != "challenger":
        return None, kept + f"; this run registered [{compared}]"
    if best is None:
        return None, kept + f"; no challenger: no candidate passed the gates [{compared}]"
    if champion.tags.get(TAG_FINGERPRINT) == best.fingerprint:
        return None, kept + "; the best candidate is the champion itself"
    current = alias_version(client, serving, CHALLENGER)
    if current is not None and current.tags.get(TAG_FINGERPRINT) == best.fingerprint:
        return None, kept + f"; @{CHALLENGER} is already v{current.version}"
    reason = (
        f"challenger: {KIND_TITLES.get(best.kind, best.kind)} passed the quality gates with "
        f"the best test {registry.select_by} of [{compared}]"
    )
    version = _serving_version(client, serving, best, reason)
    set_alias(client, serving, CHALLENGER, version, reason)
    return CHALLENGER, kept + f"; @{CHALLENGER} -> v{version}: {reason}"


def _champion_info(client: Any, serving: str) -> dict[str, Any] | None:
    champion = alias_version(client, serving, CHAMPION)
    if champion is None:
        return None
    metrics: dict[str, float] = {}
    if champion.run_id:
        metrics = _test_metrics_of(client.get_run(champion.run_id))
    return {
        "version": str(champion.version),
        "kind": champion.tags.get(TAG_KIND),
        "uri": f"models:/{serving}@{CHAMPION}",
        "metrics": {
            k: v
            for k, v in metrics.items()
            if k in ("auc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc")
        },
    }
