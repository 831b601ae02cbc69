"""The train step: training set -> Wide & Deep, DCN and the LR baseline -> evaluate -> log -> register.

:func:`train_and_register` is what the ``train`` flow (and any caller) runs:

1. the point-in-time training set (built through the feature service unless given);
2. a fingerprint per model family of everything that decides the model: the training-set
   contents, the model config, the family and the code that trains and logs it (``models/``,
   this module, the pyfunc wrapper).
   A family whose fingerprint already has a registry version is not trained or registered
   again (an identical re-run adds nothing); one whose run was logged but not registered
   (a crash in between) is registered from that run;
3. training with checkpoints under ``<state home>/training/<kind>/<fingerprint>``: a process
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
anywhere leaves the aliases as they were. The pieces live next door: fingerprints
(:mod:`.fingerprints`), evaluation and plots (:mod:`.evaluation`), run logging shared by the
baseline and the candidates (:mod:`.runs`, :mod:`.baseline`, :mod:`.candidate`), the result
(:mod:`.outcome`); the promotion decision is :mod:`rankflow.registry.promotion`'s.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.config import RankflowConfig
from rankflow.paths import StatePaths
from rankflow.registry.aliases import (
    alias_version,
    aliases_of,
    apply_plan,
    read_serving_state,
)
from rankflow.registry.gates import KIND_TITLES
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import CHAMPION, decide_promotion
from rankflow.registry.versions import TAG_KIND, ensure_registered_model, find_version
from rankflow.tracking.lineage import lineage_tags
from rankflow.tracking.setup import Tracking, settings_of, setup_tracking
from rankflow.training import diagnostics
from rankflow.training.baseline import prepare_shared
from rankflow.training.candidate import (
    Source,
    StepHook,
    logged_model_id,
    register_from_run,
    reused,
    train_candidate,
)
from rankflow.training.fingerprints import code_fingerprint, data_fingerprint, model_fingerprint
from rankflow.training.outcome import CandidateOutcome, TrainOutcome
from rankflow.training.runs import StepContext, WarmSource, finished_run, run_test_metrics

if TYPE_CHECKING:
    from models.config import ModelConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.settings import Settings

log = logging.getLogger(__name__)

MODEL_KINDS: tuple[str, ...] = ("wide_deep", "dcn")
HEADLINE_METRICS = ("auc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc")


def train_and_register(
    config: RankflowConfig,
    paths: StatePaths,
    *,
    training_set: TrainingSet | None = None,
    model_config: ModelConfig | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    on_train_step: StepHook | None = None,
    settings: Settings | None = None,
    families: tuple[str, ...] = MODEL_KINDS,
    promote: bool = True,
    warm_start: WarmSource | None = None,
) -> TrainOutcome:
    """Train, evaluate, log and register Wide & Deep and DCN; name a first champion.

    ``training_set``: a built training set (default: build it through the feature service).
    ``model_config``: the model config (default: ``config.model_config_path`` with
    ``model_overrides`` applied). ``on_train_step(kind, step, loss)`` runs after every
    training step (progress reporting; tests use it to kill the process mid-training).
    ``settings``: where MLflow is (default: resolved for ``paths``' home).
    ``families``: train and register only these families (and decide among them);
    ``promote=False``: move no alias (the Dask option trains each family in its own process
    this way; then one call with every family reuses the registered versions and decides).
    ``warm_start``: start each family from this production model (the canary; its
    fingerprint enters the candidates'). Pass ``promote=False`` with it: the canary decides.
    """
    started = time.perf_counter()
    tracking = setup_tracking(config, settings_of(paths, settings))
    model_config = _model_config(config, model_config, model_overrides)
    if training_set is None:
        from rankflow.features.training_set import build_training_set

        training_set = build_training_set(paths, config.training_set)
    _ensure_registered_models(config, tracking)

    data_fp, code_fp = data_fingerprint(training_set), code_fingerprint()
    log.info("data fingerprint %s, code fingerprint %s", data_fp, code_fp)
    with tempfile.TemporaryDirectory(prefix="rankflow-train-") as tmp:
        ctx = StepContext(
            config=config,
            paths=paths,
            tracking=tracking,
            model_config=model_config,
            training_set=training_set,
            data_fp=data_fp,
            code_fp=code_fp,
            lineage=lineage_tags(config, paths, training_set),
            scratch=Path(tmp),
            # Data/config disagreements (issue #11): run summary, MLflow (candidate.py).
            warnings=diagnostics.step_warnings(config, model_config, training_set),
            warm_start=warm_start,
        )
        for warning in ctx.warnings:
            log.warning("%s", warning)
        outcomes: dict[str, CandidateOutcome] = {}
        sources: dict[str, Source] = {}
        for kind in families:
            outcomes[kind], sources[kind] = _candidate(ctx, kind, on_train_step)
    return _promote(ctx, outcomes, sources, started, settings_of(paths, settings), promote)


def _model_config(
    config: RankflowConfig,
    model_config: ModelConfig | None,
    overrides: Mapping[str, Any] | None,
) -> ModelConfig:
    from models.config import load_model_config

    if model_config is None:
        return load_model_config(config.resolved_model_config_path(), dict(overrides or {}))
    return model_config.with_overrides(dict(overrides)) if overrides else model_config


def _ensure_registered_models(config: RankflowConfig, tracking: Tracking) -> None:
    """Each family's registered model and the serving model, described for the UI."""
    client = tracking.client
    for kind in MODEL_KINDS:
        ensure_registered_model(
            client,
            config.registry.model_names.of(kind),
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


def _candidate(
    ctx: StepContext, kind: str, on_train_step: StepHook | None
) -> tuple[CandidateOutcome, Source]:
    """Reuse the version with this fingerprint, register a logged run, or train anew."""
    warm_from = ctx.warm_start.fingerprint if ctx.warm_start is not None else None
    fingerprint = model_fingerprint(kind, ctx.data_fp, ctx.code_fp, ctx.model_config, warm_from)
    name = ctx.config.registry.model_names.of(kind)
    existing = find_version(ctx.tracking.client, name, fingerprint)
    if existing is None:
        run = finished_run(ctx.tracking, fingerprint)
        if run is not None:
            log.info("%s: run %s was logged but not registered", kind, run.info.run_id)
            existing = register_from_run(ctx, kind, fingerprint, run)
    if existing is not None:
        model_id = getattr(existing, "model_id", None) or logged_model_id(existing.source)
        return reused(ctx, kind, existing), (existing.source, model_id)
    prepare_shared(ctx)
    return train_candidate(ctx, kind, fingerprint, on_train_step)


def _promote(
    ctx: StepContext,
    outcomes: dict[str, CandidateOutcome],
    sources: dict[str, Source],
    started: float,
    settings: Settings,
    promote: bool = True,
) -> TrainOutcome:
    """Decide the alias moves (pure), apply them, and report where the aliases are.

    Read, decide and write under the promotion lock (a file lock locally, a Postgres advisory
    lock in the server profile): MLflow has no compare-and-set, and a concurrent canary or
    train run must not decide on aliases that are about to move. ``promote=False`` (a call
    that trained some families only, e.g. a Dask task) reports the aliases and moves none.
    """
    client, serving = ctx.tracking.client, ctx.config.registry.serving_model
    promoted: str | None = None
    if promote:
        candidates = [outcomes[k].candidate(*sources[k]) for k in outcomes]
        with promotion_lock(settings, serving):
            state = read_serving_state(client, serving)
            plan = decide_promotion(candidates, state, ctx.config.registry)
            applied = apply_plan(client, serving, plan)
        aliases, promoted, decision = applied.aliases, plan.promoted, applied.describe(serving)
    else:
        aliases = aliases_of(client, serving)
        decision = f"no alias moved: trained {sorted(outcomes)} only; the caller decides"
    outcome = TrainOutcome(
        tracking_uri=ctx.tracking.uri,
        experiment_name=ctx.tracking.experiment_name,
        experiment_id=ctx.tracking.experiment_id,
        data_fingerprint=ctx.data_fp,
        candidates=outcomes,
        serving_model=serving,
        aliases=aliases,
        promoted=promoted,
        decision=decision,
        baseline_metrics=ctx.baseline_metrics,
        baseline_run_id=ctx.baseline_run_id,
        seconds=round(time.perf_counter() - started, 2),
        champion=_champion_info(client, serving),
        warnings=[str(w) for w in ctx.warnings],
    )
    log.info("train step done in %.1f s: %s", outcome.seconds, decision)
    return outcome


def _champion_info(client: Any, serving: str) -> dict[str, Any] | None:
    """The champion's version, kind and headline test metrics (for the report)."""
    champion = alias_version(client, serving, CHAMPION)
    if champion is None:
        return None
    metrics: dict[str, float] = {}
    if champion.run_id:
        metrics = run_test_metrics(client.get_run(champion.run_id))
    return {
        "version": str(champion.version),
        "kind": champion.tags.get(TAG_KIND),
        "uri": f"models:/{serving}@{CHAMPION}",
        "metrics": {k: v for k, v in metrics.items() if k in HEADLINE_METRICS},
    }
