"""The drift scenario (``rankflow demo`` / ``make demo``): the canary's whole story, on the
simulator, from a state where the pipeline has named a champion.

1. **Before**: the champion ranks a day of closed-loop traffic (expected CTR from the truth).
2. **Drift**: the simulator re-draws the last ``drift_days`` days with concept drift from day
   ``D`` (segment x category affinities and user tastes change); the warehouse and the online
   store are rebuilt incrementally. The champion, trained before ``D``, ranks the next day again
   and its CTR falls.
3. **Gap check** over the logged traffic: its verdict and the checks that flagged.
4. **Canary**: a challenger warm-started from the champion on the post-drift window passes the
   offline gate and the canary phase and is promoted; closed-loop CTR recovers.
5. **Failure cases**, each leaving the champion in place with the reason recorded: a challenger
   trained on shuffled labels (gates / offline gate); one that is blind to the candidates, so
   it cannot rank them, yet within a permissive offline margin (canary phase).
6. **Rollback** to the pre-drift champion; the next canary on the same data retrains the
   rolled-back model and is refused (``rejected_rolled_back``).
7. **Two canaries at once**, allowed to re-propose it (``canary.allow_rolled_back``): at most
   one promotion, the other aborts. The registry's aliases at the end.

Every stage prints its decision with its numbers. Tests run it on small data; ``make demo`` at
the default size.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.errors import RankflowError
from rankflow.registry.promotion import CHAMPION

if TYPE_CHECKING:
    from rankflow.canary.outcome import CanaryOutcome
    from rankflow.config import RankflowConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings

log = logging.getLogger(__name__)

# The candidate-blind challenger (the "passes offline, worse online" case) drops every feature
# that differs between the candidates of one request: the item's id, attributes and statistics
# and the user x category ones. It still tells users, positions and contexts apart, which is
# most of a global AUC over all rows, but gives every candidate of a request the same score, so
# it ranks them in the order they came. Global offline AUC rewards who clicks at all; a ranking
# needs which item a user clicks.
CANDIDATE_SIGNALS = ("item_", "category", "uc_")


# Candidate impressions of each closed-loop measurement (before / after the drift, after the
# promotion) unless the caller says: the expected CTRs come from the truth, not from clicks, and
# every measurement replays the same requests of the same day, so the before / after
# differences are paired and need far less traffic than the canary phase's decision on clicks.
# (100k per measurement took a third of the demo's time at the default size.)
MEASURE_IMPRESSIONS = 30_000
# The gap check's log replay: its metric gap judges AUC and log loss on the replay's clicks,
# which need more rows. At the default size after the drift, 100k rows showed online AUC 0.639
# against 0.723 offline (a 0.084 drop; the fail threshold is 0.05) and PSI up to 0.68 (drift
# compares 5k rows, skew at most 50k, whatever the replay's size); at 50k the AUC's standard
# error (~0.006) leaves the drop ~5 SE above the threshold, and the stage takes half the time.
GAP_IMPRESSIONS = 50_000
# The demo's drift: every user, the drifted parts of the truth fully re-drawn.
STRONG_DRIFT = {"drift_strength": 1.0, "drift_user_share": 1.0}


class ScenarioError(RankflowError):
    """The scenario cannot start (no champion, not simulated data)."""


@dataclass
class Stage:
    name: str
    decision: str
    line: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # wall time since the previous stage (what this stage cost)


@dataclass
class ScenarioReport:
    stages: list[Stage] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    # Stage times are what a user waits for in `make demo` (and what the e2e spends).
    _last_mark: float = field(default_factory=lambda: time.monotonic(), init=False, repr=False)

    def add(self, stage: Stage) -> Stage:
        now = time.monotonic()
        stage.seconds, self._last_mark = now - self._last_mark, now
        log.info("[%s] %s: %s (%.0f s)", stage.name, stage.decision, stage.line, stage.seconds)
        print(f"[{stage.name}] {stage.decision}: {stage.line} ({stage.seconds:.0f} s)", flush=True)
        self.stages.append(stage)
        return stage

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def summary(self) -> str:
        lines = [f"[{s.name}] {s.decision}: {s.line} ({s.seconds:.0f} s)" for s in self.stages]
        shown = ", ".join(f"@{a} -> v{v}" for a, v in sorted(self.aliases.items()))
        lines.append(f"registry aliases: {shown}")
        lines.append(f"scenario time: {self.seconds / 60:.1f} min")
        return "\n".join(lines)


def closed_loop_ctr(settings: Settings, config: RankflowConfig, impressions: int) -> dict:
    """The champion alone on a day of closed-loop traffic: online and expected CTR."""
    from rankflow.sim.replay import run_replay

    result = run_replay(
        settings,
        config.scoring(),
        mode="closed",
        canary_share=0.0,
        impressions=impressions,
        top_k=config.canary.top_k,
        seed=config.canary.seed,
        progress=False,
    )
    arm = result.arms[CHAMPION].to_dict()
    return {
        "version": ",".join(arm["versions"]),
        "ctr": arm["ctr"],
        "expected_ctr": arm["expected_ctr"],
        "expected_ctr_oracle_order": arm["expected_ctr_oracle_order"],
        "impressions": arm["impressions"],
        "day": str(result.day),
    }


def _ctr_line(ctr: dict) -> str:
    return (
        f"v{ctr['version']} on {ctr['day']}: CTR {ctr['ctr']:.4f}, expected CTR "
        f"{ctr['expected_ctr']:.4f} (the truth's own order {ctr['expected_ctr_oracle_order']:.4f})"
    )


def inject_drift(settings: Settings, config: RankflowConfig, drift_days: int) -> RankflowConfig:
    """Re-simulate with drift over the last ``drift_days`` days, then rebuild (incremental)."""
    from rankflow.sim.daily import build_simulated

    sim = config.simulation
    drift_day = max(1, sim.days - drift_days)
    # A strong drift (every user, drifted parts fully re-drawn): the scenario is about what the
    # canary does with it, not about whether a mild one is noticed.
    update = {"drift_day": drift_day, **STRONG_DRIFT}
    drifted = config.model_copy(update={"simulation": sim.model_copy(update=update)})
    # The state is now the drifted one: later commands (a canary after the demo) keep it.
    build_simulated(settings, drifted, by="demo")
    _archive_served_log(settings.paths, config.feature_service)
    return drifted


def _archive_served_log(paths: StatePaths, service: str) -> None:
    """Move the served log aside: it was served from features of days the drift re-drew, so
    against the rebuilt offline store it would (rightly) fail the skew checks. Real history is
    not rewritten; only the demo's is."""
    from datetime import UTC, datetime

    folder = paths.logs / service
    if folder.is_dir():
        folder.rename(folder.with_name(f"{service}-before-drift-{datetime.now(UTC):%Y%m%dT%H%M%S}"))


def _canary_line(outcome: CanaryOutcome) -> str:
    numbers = []
    if outcome.offline:
        auc = outcome.offline["intervals"]["auc"]
        numbers.append(
            f"offline AUC diff {auc['difference']:+.4f} [{auc['low']:+.4f}, {auc['high']:+.4f}]"
        )
    if outcome.online:
        on = outcome.online
        numbers.append(
            f"online CTR {on['ctr_challenger']:.4f} vs {on['ctr_champion']:.4f} "
            f"(p={on['p_value']:.3g}, {on['views_challenger']:,}/{on['views_champion']:,} views)"
        )
        if on.get("truth"):
            numbers.append(on["truth"]["verdict_was"])
    return "; ".join([outcome.reason, *numbers])


def _canary_stage(name: str, outcome: CanaryOutcome) -> Stage:
    return Stage(name, outcome.decision, _canary_line(outcome), outcome.to_dict())


def shuffled_labels(training_set: TrainingSet, seed: int = 0) -> TrainingSet:
    """The same training set with its train and valid labels permuted (the test split, the
    shared holdout, keeps its true labels)."""
    from dataclasses import replace

    from models.schema import LABEL

    rng = np.random.default_rng(seed)
    frames = {}
    for name in ("train", "valid"):
        frame = getattr(training_set, name).copy()
        frame[LABEL] = rng.permutation(frame[LABEL].to_numpy())
        frames[name] = frame
    return replace(training_set, **frames)


def candidate_blind_model_config(config: RankflowConfig, folder: Path) -> Path:
    """A copy of the model config without any feature that tells one request's candidates
    apart (``CANDIDATE_SIGNALS``; written to ``folder``)."""
    import yaml

    data = yaml.safe_load(config.resolved_model_config_path().read_text())
    features = data["features"]
    features["undeclared"] = "ignore"  # the dropped features are still in the feature service
    for section in ("categorical", "numeric"):
        features[section] = {
            name: spec
            for name, spec in (features.get(section) or {}).items()
            if not name.startswith(CANDIDATE_SIGNALS)
        }
    features["crosses"] = [
        cross
        for cross in features.get("crosses") or []
        if not any(str(f).startswith(CANDIDATE_SIGNALS) for f in cross.get("features", []))
    ]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model-candidate-blind.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def concurrent_canaries(
    settings: Settings, config: RankflowConfig, folder: Path, n: int = 2
) -> list[dict[str, Any]]:
    """Start ``n`` canaries at the same moment, each in its own process (``rankflow canary
    --no-flow``) on the same state: the training lock queues their training, the promotion
    lock and the champion check decide. Each result: exit code, decision and its line."""
    import sys

    import yaml

    data = config.model_dump(mode="json")
    data["model_config_path"] = str(config.resolved_model_config_path())
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "concurrent-canary.yaml"
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "rankflow",
        "--home",
        str(settings.paths.root),
        "--config",
        str(config_file),
        "canary",
        "--no-flow",
    ]
    return start_together(command, settings.child_env(), n)


def start_together(command: list[str], env: dict[str, str], n: int = 2) -> list[dict[str, Any]]:
    """Run ``n`` copies of a ``rankflow canary`` command at the same moment and read each
    one's decision: exit code, decision (``error`` for a refusal), its line and, for a refusal,
    the end of its stderr (the traceback a failing test shows)."""
    import subprocess

    processes = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    results = []
    for process in processes:
        out, err = process.communicate()
        line = next((x for x in out.splitlines() if x.startswith("canary: ")), None)
        if line is None:  # a refusal: the one-line error is the last line of stderr
            line = (err.strip().splitlines() or ["(no output)"])[-1]
            decision = "error"
        else:
            decision = line.split(":", 2)[1].strip().lower()
        result = {"code": process.returncode, "decision": decision, "line": line}
        if decision == "error":
            result["stderr"] = "\n".join(err.strip().splitlines()[-40:])
        results.append(result)
    return results


def run_scenario(
    settings: Settings,
    config: RankflowConfig,
    *,
    drift_days: int | None = None,
    traffic_impressions: int | None = None,
    concurrent: bool = True,
    scratch: Path | None = None,
) -> ScenarioReport:
    """The whole story (module docstring). ``drift_days``: days re-drawn with drift (default:
    the canary window); ``traffic_impressions``: per closed-loop measurement (default: the
    canary phase's traffic, at most ``MEASURE_IMPRESSIONS``; the gap check's replay at most
    ``GAP_IMPRESSIONS``); ``concurrent``: end with the two concurrent canaries, each with the
    configured phase, which lets them decide and race (the tests race two canaries with a
    given verdict instead: tests/integration/test_canary_flow.py)."""
    import tempfile

    from rankflow.canary.run import run_canary
    from rankflow.sim.canary import canary_simulation

    _require_champion(settings, config)
    report = ScenarioReport()
    cc = config.canary
    impressions = traffic_impressions or min(cc.traffic_impressions, MEASURE_IMPRESSIONS)
    before = closed_loop_ctr(settings, config, impressions)
    report.add(Stage("before drift", "served", _ctr_line(before), before))
    drifted = inject_drift(settings, config, drift_days or config.canary.window_days or 7)
    after = closed_loop_ctr(settings, drifted, impressions)
    fall = after["expected_ctr"] - before["expected_ctr"]
    report.add(
        Stage(
            "after drift",
            "degraded" if fall < 0 else "not degraded",
            f"{_ctr_line(after)}; expected CTR {fall:+.4f}",
            after,
        )
    )
    gap_impressions = traffic_impressions or min(cc.traffic_impressions, GAP_IMPRESSIONS)
    report.add(_gap_stage(settings, drifted, gap_impressions))
    retrain = report.add(
        _canary_stage(
            "canary retrain",
            run_canary(settings, drifted.canary_run(), simulation=canary_simulation()),
        )
    )
    if retrain.decision == "promoted":
        recovered = closed_loop_ctr(settings, drifted, impressions)
        gain = recovered["expected_ctr"] - after["expected_ctr"]
        report.add(
            Stage(
                "after promotion",
                "recovered" if gain > 0 else "not recovered",
                f"{_ctr_line(recovered)}; expected CTR {gain:+.4f}",
                recovered,
            )
        )
    with tempfile.TemporaryDirectory(prefix="rankflow-demo-") as tmp:
        folder = scratch or Path(tmp)
        _failure_cases(settings, drifted, report, folder)
        report.add(_rollback_stage(settings, drifted))
        # The next canary on the same data retrains the model just rolled back: it is refused.
        report.add(
            _canary_stage(
                "canary after rollback",
                run_canary(settings, drifted.canary_run(), simulation=canary_simulation()),
            )
        )
        if concurrent:
            # The race re-proposes it on purpose (the rollback above was a drill, not a verdict
            # on the model): both canaries train the same challenger, at most one may promote it.
            race = {"allow_rolled_back": True}
            update = {"canary": drifted.canary.model_copy(update=race)}
            racing = drifted.model_copy(update=update)
            report.add(_concurrency_stage(concurrent_canaries(settings, racing, folder)))
    from rankflow.registry.aliases import aliases_of
    from rankflow.tracking.setup import setup_tracking

    client = setup_tracking(drifted.tracking, settings).client
    report.aliases = aliases_of(client, drifted.registry.serving_model)
    return report


def _rollback_stage(settings: Settings, config: RankflowConfig) -> Stage:
    from rankflow.canary.rollback import RollbackError, rollback

    try:
        applied = rollback(
            settings,
            config.tracking,
            config.registry.serving_model,
            "demo: restore the pre-drift champion",
        )
    except RollbackError as error:
        return Stage("rollback", "refused", str(error))
    return Stage("rollback", "rolled back", applied.describe(config.registry.serving_model))


def _require_champion(settings: Settings, config: RankflowConfig) -> None:
    from rankflow.registry.aliases import alias_version
    from rankflow.tracking.setup import setup_tracking

    if config.source != "simulate":
        raise ScenarioError("the drift scenario needs the simulator (source: simulate)")
    client = setup_tracking(config.tracking, settings).client
    if alias_version(client, config.registry.serving_model, CHAMPION) is None:
        raise ScenarioError(
            f"no @champion of {config.registry.serving_model!r}: run `make run` first"
        )


def _gap_stage(settings: Settings, config: RankflowConfig, impressions: int) -> Stage:
    """Log-replay a day (labels for the metric gap), then the gap check over it."""
    from rankflow.monitoring.report import run_gap_check
    from rankflow.sim.replay import run_replay

    run_replay(settings, config.scoring(), mode="log", impressions=impressions, progress=False)
    outcome = run_gap_check(settings, config.monitoring, config.scoring(), log_to_mlflow=True)
    flagged = {c.name: c.verdict for c in outcome.checks if c.verdict != "pass"}
    line = f"verdict {outcome.verdict}; " + (
        ", ".join(f"{k} {v}" for k, v in flagged.items()) or "every check passed"
    )
    return Stage("gap check", outcome.verdict, line, outcome.to_dict())


def _failure_cases(
    settings: Settings, config: RankflowConfig, report: ScenarioReport, folder: Path
) -> None:
    from rankflow.canary.run import run_canary
    from rankflow.features.training_set import build_training_set
    from rankflow.sim.canary import canary_simulation

    window = build_training_set(
        settings,
        config.training_set,
        feature_service=config.feature_service,
        last_days=config.canary.window_days,
    )
    broken = run_canary(
        settings,
        config.canary_run(),
        training_set=shuffled_labels(window),
        simulation=canary_simulation(),
    )
    report.add(_canary_stage("shuffled labels", broken))
    permissive = config.model_copy(
        update={
            "model_config_path": candidate_blind_model_config(config, folder),
            "canary": config.canary.model_copy(
                update={
                    "measure_warm_start": False,
                    "offline": config.canary.offline.model_copy(
                        # A team that switched the offline comparison off to ship faster
                        # (margins no model misses): the canary phase is then the last line.
                        # The candidate-blind model loses 0.075 AUC against a fresh champion
                        # at the default size and 0.175 in the e2e scenario; the shipped
                        # configs/rankflow.yaml margins are 0.002 / 0.001.
                        update={
                            "auc_margin": 0.5,
                            "logloss_margin": 0.1,
                            "max_ece_increase": 0.05,
                        }
                    ),
                }
            ),
        }
    )
    report.add(
        _canary_stage(
            "worse online",
            run_canary(settings, permissive.canary_run(), simulation=canary_simulation()),
        )
    )


def _concurrency_stage(results: list[dict[str, Any]]) -> Stage:
    promoted = sum(r["decision"] == "promoted" for r in results)
    lines = [f"canary {i + 1} (exit {r['code']}): {r['line']}" for i, r in enumerate(results)]
    decision = f"{promoted} promotion(s) of {len(results)} concurrent canaries"
    return Stage(
        "concurrent canaries",
        decision,
        " | ".join(lines),
        {
            "promotions": promoted,
            "outcomes": [r["decision"] for r in results],
            "codes": [r["code"] for r in results],
        },
    )
