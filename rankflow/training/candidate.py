"""The candidate run: train one model family, evaluate, gate, log the run, register a version.

Or, when the family already has a version with this fingerprint, reuse it; when a finished
run logged the model but its process died before registering, register from that run. Every
path ends in a :class:`CandidateOutcome` plus the logged model's source and id, which the
promotion step needs to register the version in the serving model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rankflow.jsonable import to_jsonable
from rankflow.registry.gates import KIND_TITLES, GateResult, check_gates
from rankflow.registry.versions import (
    TAG_FINGERPRINT,
    TAG_GATES,
    TAG_KIND,
    metric_tags,
    register_version,
    version_description,
)
from rankflow.tracking.lineage import TAG_FEATURE_SERVICE
from rankflow.training import diagnostics
from rankflow.training.evaluation import evaluate_predictions
from rankflow.training.outcome import CandidateOutcome
from rankflow.training.runs import (
    TAG_MODEL_URI,
    TEST_PREFIX,
    StepContext,
    close_stale_runs,
    log_history,
    log_metrics,
    log_plots,
    run_params,
    run_test_metrics,
    start_run,
)

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from models.scoring import Scorer
    from models.train import TrainResult

log = logging.getLogger(__name__)

StepHook = Callable[[str, int, float], None]
Source = tuple[str, str | None]  # the logged model's URI and model id


@dataclass
class _Trained:
    """A trained and evaluated candidate, not yet logged."""

    result: TrainResult
    seconds: float
    scorer: Scorer
    probs: np.ndarray
    metrics: dict[str, float]
    gate: GateResult


def train_candidate(
    ctx: StepContext, kind: str, fingerprint: str, on_train_step: StepHook | None
) -> tuple[CandidateOutcome, Source]:
    """Train, evaluate and gate ``kind``; log its run and model; register the version."""
    trained = _train_and_evaluate(ctx, kind, fingerprint, on_train_step)
    run_id, info = _log_run(ctx, kind, fingerprint, trained)
    version = _register(ctx, kind, fingerprint, run_id, info.model_uri, info.model_id, trained)
    name = ctx.train.registry.model_names.of(kind)
    log.info("%s: registered %s v%s (%s)", kind, name, version.version, trained.gate.summary())
    outcome = CandidateOutcome(
        kind=kind,
        registered_model=name,
        version=str(version.version),
        run_id=run_id,
        fingerprint=fingerprint,
        metrics=trained.metrics,
        gate=trained.gate,
        reused=False,
        resumed=trained.result.resumed,
        checkpoint_path=trained.result.checkpoint_path,
        train_seconds=round(trained.seconds, 2),
    )
    return outcome, (version.source, getattr(version, "model_id", None) or info.model_id)


def _train_and_evaluate(
    ctx: StepContext, kind: str, fingerprint: str, on_train_step: StepHook | None
) -> _Trained:
    """Train with checkpoints under ``training/<kind>/<fingerprint>`` (resumable), then
    score the test split and check the gates."""
    from models.scoring import Scorer
    from models.train import RunOptions, train_model

    ts = ctx.training_set
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
        RunOptions(
            checkpoint_dir=ctx.paths.training / kind / fingerprint,
            warm_start_from=ctx.warm_start.checkpoint if ctx.warm_start is not None else None,
            resume=True,
            step_callback=hook,
        ),
    )
    seconds = time.perf_counter() - started
    scorer = Scorer.from_checkpoint(result.checkpoint_path)
    probs = scorer.predict_proba(ts.test)
    metrics = evaluate_predictions(
        probs,
        ts.test,
        truth=ctx.truth,
        baseline=ctx.baseline_probs,
        segment_columns=ctx.train.tracking.segment_columns,
    )
    gate = check_gates(metrics, ctx.train.registry.gates)
    return _Trained(result, seconds, scorer, probs, metrics, gate)


def _log_run(ctx: StepContext, kind: str, fingerprint: str, trained: _Trained) -> tuple[str, Any]:
    """One MLflow run: params, curves, test metrics, artifacts, plots and the pyfunc model."""
    import mlflow

    from rankflow.tracking.pyfunc import log_pyfunc_model

    close_stale_runs(ctx.tracking, fingerprint)
    ts, gate, title = ctx.training_set, trained.gate, KIND_TITLES[kind]
    tags = ctx.run_tags(
        kind,
        fingerprint,
        **{
            TAG_GATES: "passed" if gate.passed else "failed",
            "rankflow.resumed": str(trained.result.resumed).lower(),
            **(ctx.warm_start.tags() if ctx.warm_start is not None else {}),
        },
    )
    description = f"{title} CTR model on {ts.window}; {gate.summary()}"
    with start_run(ctx, f"{kind}-{fingerprint[:8]}", tags, description) as run:
        run_id = run.info.run_id
        mlflow.log_params(run_params(ctx.train.pipeline, ctx.model_config, kind))
        _log_run_metrics(ctx, run_id, trained)
        _log_run_files(ctx, kind, trained)
        curves = {title: trained.probs}
        if ctx.baseline_probs is not None:
            curves["LR baseline"] = ctx.baseline_probs
        log_plots(ctx, ctx.scratch / kind / "plots", curves, f"{title}, test split")
        info = log_pyfunc_model(
            trained.result.checkpoint_path,
            feature_service=ts.feature_service,
            example_frame=ts.test,
            example_rows=ctx.train.tracking.input_example_rows,
            metadata={"rankflow_fingerprint": fingerprint},
            tags={
                TAG_KIND: kind,
                TAG_FINGERPRINT: fingerprint,
                TAG_FEATURE_SERVICE: ts.feature_service,
            },
        )
        # Marks the run as complete enough to register from, should registration not happen.
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    return run_id, info


def _log_run_metrics(ctx: StepContext, run_id: str, trained: _Trained) -> None:
    ts, client = ctx.training_set, ctx.tracking.client
    training = ctx.model_config.training
    per_epoch = training.eval_every_steps is None and training.eval_every_epochs is None
    log_history(client, run_id, trained.result.history, per_epoch)
    final = {f"{TEST_PREFIX}{k}": v for k, v in trained.metrics.items()}
    final.update({f"best_valid_{k}": v for k, v in trained.result.best_metrics.items()})
    final.update(
        train_seconds=trained.seconds,
        train_rows=float(len(ts.train)),
        valid_rows=float(len(ts.valid)),
        test_rows=float(len(ts.test)),
    )
    # Rows and positives behind each segment AUC: a small segment's AUC is noise.
    label = ctx.model_config.features.label
    final.update(
        diagnostics.step_segment_counts(ctx.train.tracking.segment_columns, ts.test, label)
    )
    log_metrics(client, run_id, final)


def _log_run_files(ctx: StepContext, kind: str, trained: _Trained) -> None:
    """Feature spec, metrics, history, gates, configs, data profile and the checkpoint."""
    import mlflow

    files = ctx.scratch / kind
    files.mkdir(parents=True, exist_ok=True)
    (files / "feature_spec.json").write_text(trained.scorer.spec.to_json())
    (files / "test_metrics.json").write_text(json.dumps(to_jsonable(trained.metrics), indent=1))
    (files / "history.json").write_text(json.dumps(to_jsonable(trained.result.history), indent=1))
    (files / "gates.json").write_text(json.dumps(trained.gate.to_dict(), indent=1))
    (files / "training_set.json").write_text(json.dumps(ctx.training_set.describe(), indent=1))
    mlflow.log_artifact(str(files / "feature_spec.json"))
    for file in ("test_metrics.json", "history.json", "gates.json"):
        mlflow.log_artifact(str(files / file), artifact_path="metrics")
    for file in ctx.config_files:
        mlflow.log_artifact(str(file), artifact_path="config")
    assert ctx.profile_file is not None
    mlflow.log_artifact(str(ctx.profile_file), artifact_path="data")
    mlflow.log_artifact(str(files / "training_set.json"), artifact_path="data")
    mlflow.log_dict(diagnostics.to_json(ctx.warnings), "data/warnings.json")
    mlflow.set_tag("rankflow.warnings", str(len(ctx.warnings)))
    if trained.result.warm_start_report is not None:
        mlflow.log_dict(trained.result.warm_start_report.to_dict(), "warm_start_report.json")
    mlflow.log_artifacts(str(trained.result.checkpoint_path), artifact_path="checkpoint")


def _register(
    ctx: StepContext,
    kind: str,
    fingerprint: str,
    run_id: str,
    model_uri: str,
    model_id: str | None,
    trained: _Trained | None = None,
) -> ModelVersion:
    """The family version of a logged model (metrics and gates from ``trained`` or the run)."""
    if trained is not None:
        metrics, gate = trained.metrics, trained.gate
    else:
        metrics = run_test_metrics(ctx.tracking.client.get_run(run_id))
        gate = check_gates(metrics, ctx.train.registry.gates)
    ts = ctx.training_set
    return register_version(
        ctx.tracking.client,
        ctx.train.registry.model_names.of(kind),
        source=model_uri,
        run_id=run_id,
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
            run_id=run_id,
            test_window=str(ts.split_windows["test"]),
        ),
    )


def _version_tags(
    ctx: StepContext, kind: str, metrics: Mapping[str, float], gate: GateResult
) -> dict[str, str]:
    ts = ctx.training_set
    tags = {
        TAG_KIND: kind,
        TAG_GATES: "passed" if gate.passed else "failed: " + "; ".join(gate.failures),
        TAG_FEATURE_SERVICE: ts.feature_service,
        "rankflow.data_window": str(ts.window),
        "rankflow.test_window": str(ts.split_windows["test"]),
        "rankflow.data_fingerprint": ctx.data_fp,
        **(ctx.warm_start.tags() if ctx.warm_start is not None else {}),
    }
    for key in ("rankflow.git_sha", "rankflow.simulator_seed", "rankflow.dbt_manifest_sha256"):
        if key in ctx.lineage:
            tags[key] = ctx.lineage[key]
    tags.update(metric_tags(metrics))
    return {k: v[:5000] for k, v in tags.items()}


def logged_model_id(model_uri: str | None) -> str | None:
    """``models:/m-abc`` -> ``m-abc``, the logged model's id (None for other URIs).

    A version read back over REST may lack ``model_id``, and an MLflow server refuses to
    register a ``models:/m-...`` source without it: the source names it.
    """
    if model_uri and model_uri.startswith("models:/m-"):
        return model_uri.removeprefix("models:/")
    return None


def register_from_run(ctx: StepContext, kind: str, fingerprint: str, run: Run) -> ModelVersion:
    """Register the model a finished run logged (its process died before registering)."""
    model_uri = run.data.tags[TAG_MODEL_URI]
    return _register(ctx, kind, fingerprint, run.info.run_id, model_uri, logged_model_id(model_uri))


def reused(ctx: StepContext, kind: str, version: ModelVersion) -> CandidateOutcome:
    """An existing version with this fingerprint: its run's metrics, gates re-checked."""
    metrics: dict[str, float] = {}
    if version.run_id:
        metrics = run_test_metrics(ctx.tracking.client.get_run(version.run_id))
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
        gate=check_gates(metrics, ctx.train.registry.gates),
        reused=True,
    )
