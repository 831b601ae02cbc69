"""The canary: how a new model reaches ``@champion`` (``rankflow canary``, the ``canary`` flow).

1. **Fresh window**: the training set's most recent ``canary.window_days`` days; its test days
   are the holdout both models are scored on.
2. **Challenger**: each configured family (default: the champion's) trained warm-started from
   the ``@champion`` checkpoint downloaded from the registry (optionally distilled from its
   predictions), logged and registered like any candidate; it must pass the absolute gates,
   and it must not be the very model ``rankflow rollback`` removed from ``@champion`` (same
   training fingerprint) unless ``canary.allow_rolled_back``.
3. **Offline gate** (:func:`rankflow.canary.gates.offline_gate`): paired-bootstrap intervals of
   the AUC and log-loss differences on the shared holdout, non-inferiority by declared margins,
   a calibration guardrail and the latest gap-check verdict.
4. **Challenger alias**: registered in the serving model, ``@challenger`` set, under the
   promotion lock and only if ``@champion`` is still the version the canary started against.
5. **Canary phase**: both versions serve traffic, users split by a stable hash; an
   always-valid mSPRT on the click-through rates promotes, rejects, or asks for more traffic.
   Simulated (closed-loop traffic from the simulator, played by the ``simulation`` the caller
   gives: :mod:`rankflow.canary.simulation`) or live (:mod:`rankflow.canary.live`).
6. **Decision**, under the promotion lock: promotion re-reads ``@champion`` and aborts if it is
   not the version the canary started against (MLflow has no compare-and-set), then moves
   ``@previous`` and ``@champion`` and removes ``@challenger``; a rejection removes
   ``@challenger``. Every decision is written on the versions involved and on a canary run.

Before it reads the aliases (and again before each alias move) a canary settles, under the
promotion lock, a plan of alias moves a killed run left pending
(:func:`rankflow.registry.aliases.recover_interrupted`).

With no champion yet the canary cold-starts: the train step's first-champion rule applies.
:func:`rankflow.canary.rollback.rollback` restores ``@previous``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.canary.context import CanaryContext
from rankflow.canary.decide import decide, set_challenger, settle_interrupted
from rankflow.canary.outcome import CanaryOutcome
from rankflow.canary.records import finish_canary_run, start_canary_run
from rankflow.canary.rollback import rolled_back_refusal
from rankflow.canary.simulation import (
    CanarySimulation,
    PhaseReport,
    PhaseRequest,
    SimulatedPhase,
    WarmStartMeasurement,
    WarmStartRequest,
    check_simulation,
)
from rankflow.canary.triggers import latest_gap_verdicts
from rankflow.registry.aliases import PromotionConflict, read_serving_state
from rankflow.registry.promotion import CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.canary.live import LivePhase
    from rankflow.config import CanaryRunConfig, TrainStepConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.registry.gates import Candidate
    from rankflow.registry.promotion import AliasTarget
    from rankflow.settings import Settings
    from rankflow.training.outcome import CandidateOutcome

log = logging.getLogger(__name__)


def run_canary(
    settings: Settings,
    config: CanaryRunConfig,
    *,
    training_set: TrainingSet | None = None,
    model_overrides: dict[str, Any] | None = None,
    look_only: bool = False,
    simulation: CanarySimulation | None = None,
) -> CanaryOutcome:
    """One canary (see the module docstring). ``training_set``: use this one instead of
    building the fresh window (tests inject faults this way). With a live phase open
    (``canary.phase: live``) the run is a look at it and trains nothing; ``look_only``: never
    start a new canary (the daily look deployment). ``simulation``: the simulated phase and
    the warm-vs-cold measurement (:func:`rankflow.sim.canary.canary_simulation`); a config
    that needs one the caller did not give is refused before any training."""
    from rankflow.canary.live import check_phase_config, idle_outcome, open_phase
    from rankflow.tracking.setup import setup_tracking

    started = time.perf_counter()
    serving_share = config.scoring.serving.canary_share
    phase_kind = check_phase_config(config.canary, config.train.source, serving_share)
    check_simulation(config.canary, phase_kind, simulation)
    tracking = setup_tracking(config.train.tracking, settings)
    client, serving = tracking.client, config.train.registry.serving_model
    # Before anything reads the aliases (the live phase's check, the champion to train
    # against), so that even a look-only run with nothing to look at repairs them.
    settled = settle_interrupted(settings, client, serving)
    live = open_phase(settings.paths, client, serving) if phase_kind == "live" else None
    if look_only and live is None:
        idle = idle_outcome(client, serving, time.perf_counter() - started)
        idle.stages[:0] = settled
        return idle
    state = read_serving_state(client, serving)
    champion = state.live(CHAMPION)
    if champion is None:
        cold = _cold_start(settings, config.train, training_set, model_overrides, started)
        cold.stages[:0] = settled
        return cold
    run_id = start_canary_run(tracking, serving, champion.version)
    with tempfile.TemporaryDirectory(prefix="rankflow-canary-") as tmp:
        ctx = CanaryContext(
            settings, config, client, serving, champion.version, run_id, Path(tmp), settled
        )
        try:
            if live is not None:
                outcome = _live_look(ctx, live)
            else:
                outcome = _canary(
                    ctx, champion, training_set, model_overrides, phase_kind, simulation
                )
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
    outcome.seconds = round(time.perf_counter() - started, 2)
    finish_canary_run(client, run_id, outcome)
    return outcome


def _canary(
    ctx: CanaryContext,
    champion: AliasTarget,
    training_set: TrainingSet | None,
    overrides: dict[str, Any] | None,
    phase_kind: str,
    simulation: CanarySimulation | None,
) -> CanaryOutcome:
    config = ctx.config
    given = simulation or CanarySimulation()
    measurer = given.warm_start if config.canary.measure_warm_start else None
    training_set = _fresh_window(ctx, training_set)
    champion_ckpt = _checkpoint(ctx.client, ctx.serving, champion.version, ctx.scratch / "champ")
    overrides = _challenger_overrides(ctx, overrides, len(training_set.train), measurer)
    kind, outcome, candidate, challenger_ckpt = _challenger(
        ctx, champion, champion_ckpt, training_set, overrides
    )
    label = f"{candidate.name} v{candidate.version} ({kind})"
    result = ctx.outcome(
        "rejected_gates",
        "",
        {"kind": kind, "label": label, "family": [candidate.name, candidate.version]},
    )
    family = [(candidate.name, candidate.version)]
    # Before the warm-start measurement (a second training): a refused model costs nothing more.
    refused = _refuse_rolled_back(ctx, result, candidate, label, family)
    if refused is not None:
        return refused
    result.warm_start = _measure_warm_start(
        ctx, measurer, candidate, training_set, overrides, champion_ckpt, challenger_ckpt
    )
    if not outcome.gate.passed:
        result.reason = f"{label} failed the quality gates: {', '.join(outcome.gate.failures)}"
        return ctx.finish(result, family)
    gate = _offline_gate(ctx, training_set, champion_ckpt, challenger_ckpt)
    result.offline = gate.to_dict()
    ctx.stage(gate.summary())
    if not gate.passed:
        result.decision, result.reason = "rejected_offline", f"{label}: {gate.summary()}"
        return ctx.finish(result, family)
    try:
        version = set_challenger(ctx, candidate, gate.summary())
    except PromotionConflict as conflict:
        result.decision, result.reason = "aborted", f"{label} not canaried: {conflict}"
        ctx.stage(result.reason)
        return ctx.finish(result, family)
    result.challenger["serving_version"] = version
    versions = [*family, (ctx.serving, version)]
    if phase_kind == "live":
        return _start_live_phase(ctx, result, version, versions)
    phase = _simulated_phase(ctx, given.phase, version, training_set)
    result.online = phase.to_dict()
    ctx.stage(phase.summary().replace("\n", " |"))
    return decide(ctx, result, phase.decision, version, versions)


def _fresh_window(ctx: CanaryContext, training_set: TrainingSet | None) -> TrainingSet:
    """The given training set, or the last ``canary.window_days`` built through the served
    feature service."""
    config = ctx.config
    if training_set is None:
        from rankflow.features.training_set import build_training_set

        training_set = build_training_set(
            ctx.settings,
            config.train.split,
            feature_service=config.train.feature_service,
            last_days=config.canary.window_days,
        )
    ctx.stage(f"fresh window {training_set.window} ({len(training_set.train):,} train rows)")
    return training_set


def _refuse_rolled_back(
    ctx: CanaryContext,
    result: CanaryOutcome,
    candidate: Candidate,
    label: str,
    family: list[tuple[str, str]],
) -> CanaryOutcome | None:
    """The finished outcome if the challenger is a model rolled back before (and the config
    does not allow it again); None to go on."""
    refusal = rolled_back_refusal(
        ctx.client,
        ctx.serving,
        candidate.fingerprint,
        label,
        allow=ctx.config.canary.allow_rolled_back,
        note=ctx.stage,
    )
    if refusal is None:
        return None
    result.decision, result.reason = "rejected_rolled_back", refusal[0]
    result.challenger["serving_version"] = refusal[1]  # type: ignore[index]
    ctx.stage(refusal[0])
    return ctx.finish(result, [*family, (ctx.serving, refusal[1])])


def _checkpoint(client: MlflowClient, name: str, version: str, dst: Path) -> Path:
    from rankflow.tracking.pyfunc import checkpoint_of

    dst.mkdir(parents=True, exist_ok=True)
    # The version's own artifact URI: ``models:/`` would resolve through the process-global
    # registry URI, not this client's.
    return checkpoint_of(client.get_model_version_download_uri(name, version), dst)


def _challenger_overrides(
    ctx: CanaryContext,
    overrides: dict[str, Any] | None,
    train_rows: int,
    measurer: WarmStartMeasurement | None,
) -> dict:
    """The model-config overrides of the challenger (and of its cold-start comparison); with
    the warm-start measurement on, its evaluation cadence, so the challenger is its warm arm."""
    overrides = dict(overrides or {})
    distill_weight = ctx.config.canary.distill_weight
    if distill_weight > 0:
        overrides["warm_start"] = {"distill_weight": distill_weight}
    if measurer is not None:
        overrides |= measurer.measuring_overrides(
            ctx.config.train.model_config_path, overrides, train_rows
        )
    return overrides


def _challenger(
    ctx: CanaryContext,
    champion: AliasTarget,
    champion_ckpt: Path,
    training_set: TrainingSet,
    overrides: dict[str, Any],
) -> tuple[str, CandidateOutcome, Candidate, Path]:
    """Train the configured families warm-started from the champion; the best of them."""
    from rankflow.registry.gates import pick_best
    from rankflow.training.candidate import logged_model_id
    from rankflow.training.runs import WarmSource
    from rankflow.training.step import CandidatesOnly, train_and_register

    config = ctx.config
    families = tuple(config.canary.families or [champion.kind or "dcn"])
    source = WarmSource(champion_ckpt, champion.version, champion.fingerprint or champion.version)
    # A concurrent canary waits in there for the training lock (then reuses the
    # identical version, if its inputs are the same) and races only at the alias moves.
    trained = train_and_register(
        config.train,
        ctx.settings,
        training_set=training_set,
        model_overrides=overrides,
        families=families,
        candidates_only=CandidatesOnly(warm_start=source),
    )
    candidates = {}
    for kind in families:
        out = trained.candidates[kind]
        mv = ctx.client.get_model_version(out.registered_model, out.version)
        # Over REST (an MLflow server) a version may come back without its model_id, and the
        # server refuses to register its models:/m-... source elsewhere without it.
        model_id = getattr(mv, "model_id", None) or logged_model_id(mv.source)
        candidates[kind] = out.candidate(mv.source, model_id)
        ctx.stage(f"challenger {kind}: {out.registered_model} v{out.version}, {out.gate.summary()}")
    best = pick_best(list(candidates.values()), config.train.registry.select_by)
    kind = best.kind if best is not None else families[0]
    outcome = trained.candidates[kind]
    ckpt = outcome.checkpoint_path
    if ckpt is None or not Path(ckpt).is_dir():  # reused version: fetch its checkpoint
        ckpt = _checkpoint(
            ctx.client, outcome.registered_model, outcome.version, ctx.scratch / "challenger"
        )
    return kind, outcome, candidates[kind], Path(ckpt)


def _measure_warm_start(
    ctx: CanaryContext,
    measurer: WarmStartMeasurement | None,
    candidate: Candidate,
    training_set: TrainingSet,
    overrides: dict[str, Any],
    champion_ckpt: Path,
    challenger_ckpt: Path,
) -> dict[str, Any] | None:
    """Warm against cold start at an equal budget, when configured
    (``canary.measure_warm_start``); under the state's training lock, since the cold arm is one
    more training on this state."""
    if measurer is None:
        return None
    from rankflow.locks import TRAINING_WAIT_SECONDS, training_lock

    request = WarmStartRequest(
        candidate,
        training_set,
        ctx.config.train.model_config_path,
        overrides,
        champion_ckpt,
        challenger_ckpt,
        ctx.settings.paths.training / "warm-vs-cold",
        ctx.scratch / "warm-vs-cold",
    )
    with training_lock(ctx.settings.paths, wait_seconds=TRAINING_WAIT_SECONDS, note=log.warning):
        report = measurer.measure(request)
    ctx.stage(
        ("(same inputs as a stored measurement) " if report.stored else "")
        + report.summary.replace("\n", " ")
    )
    return report.to_dict()


def _simulated_phase(
    ctx: CanaryContext, run_phase: SimulatedPhase | None, version: str, window: TrainingSet
) -> PhaseReport:
    """The simulated phase the caller gave, on the champion and ``version`` pinned."""
    assert run_phase is not None  # check_simulation refused a simulated phase without one
    config = ctx.config
    return run_phase(
        PhaseRequest(
            ctx.settings, config.canary, config.scoring, ctx.champion, version, window, ctx.run_id
        )
    )


def _offline_gate(
    ctx: CanaryContext, training_set: TrainingSet, champion_ckpt: Path, challenger_ckpt: Path
) -> Any:
    from models.schema import LABEL
    from models.scoring import Scorer
    from rankflow.canary.gates import offline_gate

    holdout = training_set.test
    champion = Scorer.from_checkpoint(champion_ckpt).predict_proba(holdout)
    challenger = Scorer.from_checkpoint(challenger_ckpt).predict_proba(holdout)
    return offline_gate(
        holdout[LABEL].to_numpy(),
        champion,
        challenger,
        ctx.config.canary.offline,
        gap_verdicts=latest_gap_verdicts(ctx.settings.paths),
        seed=ctx.config.canary.seed,
    )


def _start_live_phase(
    ctx: CanaryContext, result: CanaryOutcome, version: str, versions: list[tuple[str, str]]
) -> CanaryOutcome:
    """Open the live phase: @challenger is set; the deployed service's traffic decides."""
    from rankflow.canary.live import start_phase

    config = ctx.config
    phase = start_phase(
        ctx.settings.paths,
        ctx.serving,
        ctx.champion,
        version,
        ctx.run_id,
        config.canary.window_days,
    )
    share = config.scoring.serving.canary_share
    result.decision = "phase_started"
    result.reason = (
        f"{result.challenger['label'] if result.challenger else f'v{version}'} is @challenger: "
        f"the deployed service scores {share:.0%} of users with it from {phase.started_at}; "
        "every later canary run (canary-look, daily) looks at its labelled traffic and "
        f"promotes or rejects by {config.canary.online.max_views:,} views per arm at the latest"
    )
    ctx.stage(f"live phase started ({phase.describe()})")
    return ctx.finish(result, versions)


def _live_look(ctx: CanaryContext, phase: LivePhase) -> CanaryOutcome:
    """A look at the open live phase; a decision is applied as the simulated phase's is."""
    from rankflow.canary.live import end_phase, look_at_phase, write_phase

    config = ctx.config
    look = look_at_phase(
        ctx.settings.paths,
        config.scoring.feature_service,
        phase,
        config.canary.online,
        cuped=config.canary.online.variance_reduction == "cuped",
    )
    label = f"{ctx.serving} v{phase.challenger}"
    result = ctx.outcome(
        "inconclusive",
        "",
        {"kind": "live", "label": label, "serving_version": phase.challenger},
    )
    result.online = look.to_dict()
    ctx.stage(look.summary().replace("\n", " |"))
    write_phase(ctx.settings.paths, look.phase)  # the look counts even if what follows fails
    versions = [(ctx.serving, phase.challenger)]
    result = decide(ctx, result, look.decision, phase.challenger, versions)
    if result.decision != "inconclusive":
        end_phase(ctx.settings.paths, ctx.serving)
        ctx.stage(f"live phase closed: {result.decision}")
    return result


def _cold_start(
    settings: Settings,
    train: TrainStepConfig,
    training_set: TrainingSet | None,
    overrides: dict[str, Any] | None,
    started: float,
) -> CanaryOutcome:
    """No champion yet: the train step with its first-champion rule (absolute gates)."""
    from rankflow.training.step import train_and_register

    trained = train_and_register(
        train,
        settings,
        training_set=training_set,
        model_overrides=overrides,
    )
    decision = "first_champion" if trained.promoted else "no_champion"
    return CanaryOutcome(
        decision=decision,  # type: ignore[arg-type]
        reason=f"no champion yet, cold start: {trained.decision}",
        serving_model=train.registry.serving_model,
        champion_before=None,
        aliases=dict(trained.aliases),
        seconds=round(time.perf_counter() - started, 2),
        stages=[f"cold start: {trained.decision}"],
    )
