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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.errors import ConfigError
from rankflow.locks import TRAINING_WAIT_SECONDS, training_lock
from rankflow.registry.aliases import (
    actor,
    alias_version,
    aliases_of,
    apply_plan,
    read_serving_state,
    recover_interrupted,
)
from rankflow.registry.gates import KIND_TITLES
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import CHAMPION, decide_promotion
from rankflow.registry.versions import TAG_KIND, ensure_registered_model, find_version
from rankflow.tracking.lineage import lineage_tags
from rankflow.tracking.setup import Tracking, is_local_store, setup_tracking
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
    from mlflow import MlflowClient

    from models.config import ModelConfig
    from rankflow.config import RegistryConfig, TrainStepConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings

log = logging.getLogger(__name__)

MODEL_KINDS: tuple[str, ...] = ("wide_deep", "dcn")
HEADLINE_METRICS = ("auc", "logloss", "ne", "ece", "calibration_ratio", "oracle_auc")


@dataclass(frozen=True)
class CandidatesOnly:
    """Train and register the candidates and move no alias: the caller decides.

    The canary trains its challengers warm-started from ``warm_start`` (the production model;
    its fingerprint enters the candidates'); the Dask option trains each family in its own
    process, then one call with every family reuses the registered versions and decides.
    """

    warm_start: WarmSource | None = None


def train_and_register(
    train: TrainStepConfig,
    settings: Settings,
    *,
    training_set: TrainingSet | None = None,
    model_config: ModelConfig | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    on_train_step: StepHook | None = None,
    families: tuple[str, ...] = MODEL_KINDS,
    candidates_only: CandidatesOnly | None = None,
) -> TrainOutcome:
    """Train, evaluate, log and register Wide & Deep and DCN; name a first champion.

    ``training_set``: a built training set (default: build it through ``train.feature_service``).
    ``model_config``: the model config (default: ``train.model_config_path`` with
    ``model_overrides`` applied). ``on_train_step(kind, step, loss)`` runs after every
    training step (progress reporting; tests use it to kill the process mid-training).
    ``families``: the model families to train, register and decide among (default: all).
    ``candidates_only``: register the candidates and move no alias (:class:`CandidatesOnly`).
    """
    started = time.perf_counter()
    scope = candidates_only or CandidatesOnly()
    tracking = setup_tracking(train.tracking, settings)
    model_config = _model_config(train.model_config_path, model_config, model_overrides)
    training_set = _training_set(train, settings, training_set)
    _ensure_registered_models(train.registry, tracking)
    with tempfile.TemporaryDirectory(prefix="rankflow-train-") as tmp:
        ctx = _step_context(
            train, settings.paths, tracking, model_config, training_set, Path(tmp), scope.warm_start
        )
        outcomes, sources = _train_families(ctx, families, on_train_step)
    return _promote(ctx, outcomes, sources, started, settings, candidates_only is None)


def _training_set(
    train: TrainStepConfig, settings: Settings, training_set: TrainingSet | None
) -> TrainingSet:
    """The given training set, checked against the served feature service, or a new one."""
    if training_set is None:
        from rankflow.features.training_set import build_training_set

        return build_training_set(settings, train.split, feature_service=train.feature_service)
    if training_set.feature_service != train.feature_service:
        raise ConfigError(
            f"feature_service: the training set was built through "
            f"{training_set.feature_service!r}, but the config trains and serves "
            f"{train.feature_service!r}; build it through that one"
        )
    return training_set


def _step_context(
    train: TrainStepConfig,
    paths: StatePaths,
    tracking: Tracking,
    model_config: ModelConfig,
    training_set: TrainingSet,
    scratch: Path,
    warm_start: WarmSource | None,
) -> StepContext:
    """The step's shared inputs, fingerprints and data warnings (logged here)."""
    data_fp, code_fp = data_fingerprint(training_set), code_fingerprint()
    log.info("data fingerprint %s, code fingerprint %s", data_fp, code_fp)
    ctx = StepContext(
        train=train,
        paths=paths,
        tracking=tracking,
        model_config=model_config,
        training_set=training_set,
        data_fp=data_fp,
        code_fp=code_fp,
        lineage=lineage_tags(train.source, paths, training_set),
        scratch=scratch,
        # Data/config disagreements: in the run summary and on MLflow (candidate.py).
        warnings=diagnostics.step_warnings(
            train.ctr_prior, train.tracking, model_config, training_set
        ),
        warm_start=warm_start,
    )
    for warning in ctx.warnings:
        log.warning("%s", warning)
    return ctx


def _train_families(
    ctx: StepContext, families: tuple[str, ...], on_train_step: StepHook | None
) -> tuple[dict[str, CandidateOutcome], dict[str, Source]]:
    """Each family's candidate (reused or trained), under its training lock."""
    outcomes: dict[str, CandidateOutcome] = {}
    sources: dict[str, Source] = {}
    for kind in families:
        # A concurrent run training this family (a train flow, a canary) goes first; this
        # one waits, then reuses the version it registered if the inputs are the same.
        family = lock_family(kind, ctx.tracking.uri)
        # A warning, so the operator sees why the run stands still: Prefect prints only its own
        # loggers' INFO lines, and the library's loggers from WARNING up.
        with training_lock(ctx.paths, family, wait_seconds=TRAINING_WAIT_SECONDS, note=log.warning):
            outcomes[kind], sources[kind] = _candidate(ctx, kind, on_train_step)
    return outcomes, sources


def lock_family(kind: str, tracking_uri: str) -> str | None:
    """Which training lock guards training ``kind``: the family's own with a tracking server
    (families share no checkpoints or versions; the Dask option trains them at once), the
    state's (None) with the embedded SQLite store, which takes one writer at a time."""
    return None if is_local_store(tracking_uri) else kind


def _model_config(
    path: Path,
    model_config: ModelConfig | None,
    overrides: Mapping[str, Any] | None,
) -> ModelConfig:
    from models.config import load_model_config

    if model_config is None:
        return load_model_config(path, dict(overrides or {}))
    return model_config.with_overrides(dict(overrides)) if overrides else model_config


def _ensure_registered_models(registry: RegistryConfig, tracking: Tracking) -> None:
    """Each family's registered model and the serving model, described for the UI."""
    client = tracking.client
    for kind in MODEL_KINDS:
        ensure_registered_model(
            client,
            registry.model_names.of(kind),
            f"Every trained rankflow {KIND_TITLES[kind]} CTR model (one version per distinct "
            f"input fingerprint). The served model is `{registry.serving_model}`.",
            {TAG_KIND: kind},
        )
    ensure_registered_model(
        client,
        registry.serving_model,
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
    name = ctx.train.registry.model_names.of(kind)
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
    client, serving = ctx.tracking.client, ctx.train.registry.serving_model
    promoted: str | None = None
    if promote:
        candidates = [outcomes[k].candidate(*sources[k]) for k in outcomes]
        by = actor("train step")
        with promotion_lock(settings, serving):
            # A plan a killed process left half-written is settled before deciding on it.
            recovered = recover_interrupted(client, serving, by=by)
            state = read_serving_state(client, serving)
            plan = decide_promotion(candidates, state, ctx.train.registry)
            applied = apply_plan(client, serving, plan, by=by)
        aliases, promoted, decision = applied.aliases, plan.promoted, applied.describe(serving)
        if recovered is not None:
            decision = f"{recovered.describe()}; then {decision}"
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


def _champion_info(client: MlflowClient, serving: str) -> dict[str, Any] | None:
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
