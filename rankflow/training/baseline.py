"""The baseline run: what every candidate run needs first, and the logistic-regression floor.

:func:`prepare_shared` runs once per step, before the first model trains: the oracle's truth
(on simulated data), the data profile and config files every run logs, and the baseline,
whose test predictions feed the candidates' ``baseline_*`` and gap metrics.
"""

from __future__ import annotations

import json
import time

import yaml

from rankflow.jsonable import to_jsonable
from rankflow.training.evaluation import data_profile, evaluate_predictions, load_truth
from rankflow.training.fingerprints import model_fingerprint
from rankflow.training.runs import (
    TEST_PREFIX,
    StepContext,
    close_stale_runs,
    log_metrics,
    log_plots,
    param_value,
    runs_with,
    start_run,
)

BASELINE_KIND = "lr_baseline"


def prepare_shared(ctx: StepContext) -> None:
    """Once per step, before the first model is trained: truth, profile, configs, baseline."""
    if ctx.profile_file is not None:
        return
    ts = ctx.training_set
    ctx.truth = load_truth(ctx.train.source, ctx.paths, ts.test)

    files = ctx.scratch / "shared"
    files.mkdir(parents=True, exist_ok=True)
    ctx.profile_file = files / "data_profile.json"
    ctx.profile_file.write_text(json.dumps(to_jsonable(data_profile(ts)), indent=1, default=str))
    config_dir = files / "config"
    config_dir.mkdir()
    (config_dir / "rankflow.yaml").write_text(yaml.safe_dump(ctx.train.pipeline, sort_keys=False))
    (config_dir / "model.yaml").write_text(
        yaml.safe_dump(ctx.model_config.to_dict(), sort_keys=False)
    )
    ctx.config_files = [config_dir / "rankflow.yaml", config_dir / "model.yaml"]
    train_baseline(ctx)


def train_baseline(ctx: StepContext) -> None:
    """The logistic-regression floor: its test predictions feed the models' gap metrics.

    Always fitted (it is cheap and its predictions are needed); logged once per fingerprint.
    """
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
        segment_columns=ctx.train.tracking.segment_columns,
    )
    fingerprint = model_fingerprint(BASELINE_KIND, ctx.data_fp, ctx.code_fp, ctx.model_config)
    close_stale_runs(ctx.tracking, fingerprint)
    done = runs_with(ctx.tracking, fingerprint, "FINISHED")
    if done:
        ctx.baseline_run_id = done[0].info.run_id
        return
    with start_run(
        ctx,
        f"lr_baseline-{fingerprint[:8]}",
        ctx.run_tags(BASELINE_KIND, fingerprint),
        "Logistic-regression baseline (one-hot ids + dense features): the floor.",
    ) as run:
        params = {"kind": BASELINE_KIND}
        params.update({f"model.{k}": param_value(v) for k, v in ctx.model_config.flat().items()})
        mlflow.log_params(params)
        metrics = {f"{TEST_PREFIX}{k}": v for k, v in ctx.baseline_metrics.items()}
        log_metrics(ctx.tracking.client, run.info.run_id, {**metrics, "train_seconds": seconds})
        curves = {"LR baseline": ctx.baseline_probs}
        log_plots(ctx, ctx.scratch / "plots-baseline", curves, "LR baseline, test split")
        assert ctx.profile_file is not None
        mlflow.log_artifact(str(ctx.profile_file), artifact_path="data")
        ctx.baseline_run_id = run.info.run_id
