"""The soak of the daily schedule (``rankflow soak`` / ``make soak``): N simulated days of what
the deployments do, on the embedded stack, with the traffic a real front end sends.

For each day, in the order of the deployments' schedule (prefect.yaml):

1. **Serve** the day's traffic over HTTP through ``rankflow serve`` (its own process, started
   when not running): the simulator's day, with retries, explicit past times, unknown ids and
   unlabelled requests mixed in (rankflow/sim/soak_traffic.py), and halfway through it the
   day's scheduled fault (rankflow/sim/soak_faults.py). Then the served log's accounting
   (``/metrics`` counters, rows on disk), the service's RSS and the client's p99.
2. **features-daily** the next morning: the window moves one day later (the simulator appends
   the day just served), contract check, incremental dbt build, online store refresh
   (rankflow/sim/daily.py). Drift switched on at soak day ``drift_from`` stays on.
3. **gap-check** over the day's served log and its labels.
4. **canary** when the gap check's verdicts start one (as the gap-check deployment does with
   ``start_canary``) or every ``canary_every`` days (canary-weekly); the simulator says whether
   its decision was right.

Each day's log is then archived (``logs/soak-archive/<day>/``): the next gap check judges the
next day, as a one-day log retention would have it. One row per day is printed as the day ends;
at the end the invariants (rankflow/sim/soak_report.py) print as PASS / FAIL lines and the whole
record goes to ``<state>/soak/soak-<time>.json``.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rankflow.sim.scenario import STRONG_DRIFT
from rankflow.sim.soak_faults import DayFaults, LogAccount, score_rows_on_disk
from rankflow.sim.soak_report import DayRow, SoakReport
from rankflow.sim.soak_service import ServiceProcess, resident_mb
from rankflow.sim.soak_traffic import TrafficMix, send_day

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.settings import Settings
    from rankflow.sim.config import SimulationConfig
    from rankflow.sim.oracle import DayTraffic
    from rankflow.sim.soak_service import LogCounters

# Seconds to wait for the service's writer to flush what the day acknowledged.
FLUSH_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class SoakPlan:
    """How many days, when the drift starts, which fault on which day (1-based soak days)."""

    days: int = 14
    drift_from: int | None = 10
    canary_every: int = 7
    faults: dict[int, str] = field(
        default_factory=lambda: {3: "kill", 5: "remove_logs", 8: "registry"}
    )
    # per day; None: the simulator's size of the day, which the next build then writes as served
    impressions: int | None = None
    mix: TrafficMix = field(default_factory=TrafficMix)
    seed: int = 0


def soak_config(
    config: RankflowConfig, first_served: date, plan: SoakPlan, day: int
) -> RankflowConfig:
    """The config whose simulation ends (exclusive) on soak day ``day``'s served day.

    The window grows by a day each day, from the same first day, with the same impressions a
    day: as a deployment's own data accumulates, and so no 28-day counter of a served day
    changes when the oldest day would leave a sliding window shorter than 29 days. Drift is
    on once its first served day is inside the window (counted from the window's first day).
    """
    sim = config.simulation
    grown = (day - 1) + sim.days
    per_day = sim.n_impressions / sim.days
    update: dict[str, Any] = {
        "end_date": first_served + timedelta(days=day - 1),
        "days": grown,
        "n_impressions": round(per_day * grown),
    }
    drift_index = _drift_index(sim, plan)
    if drift_index is not None and drift_index < grown:
        update.update(drift_day=drift_index, **STRONG_DRIFT)
    moved = sim.model_validate({**sim.model_dump(), **update})
    return config.model_copy(update={"simulation": moved})


def _drift_index(sim: SimulationConfig, plan: SoakPlan) -> int | None:
    """The drift's first served day, counted from the (fixed) first day of the window."""
    if plan.drift_from is None:
        return None
    return sim.days + plan.drift_from - 1


def served_traffic(config: RankflowConfig, plan: SoakPlan, day: int) -> DayTraffic:
    """The simulator's traffic of soak day ``day`` (the day after ``config``'s window, which
    :func:`soak_config` made for that day), drifted from the plan's drift day on."""
    from rankflow.sim.oracle import Oracle

    sim = config.simulation
    if plan.drift_from is not None and day >= plan.drift_from:
        # The served day's index is the window's length: the simulator refuses such a
        # drift_day (no day to write), the oracle draws that day with it. No validation.
        drift_index = sim.days - day + plan.drift_from
        sim = sim.model_copy(update={"drift_day": drift_index, **STRONG_DRIFT})
    return Oracle(sim).day_traffic(sim.resolved_end_date(), plan.impressions)


class Soak:
    """The day loop (module docstring); ``run`` returns the report."""

    def __init__(self, settings: Settings, config: RankflowConfig, plan: SoakPlan) -> None:
        self.settings = settings
        self.config = config
        self.plan = plan
        self.first_served = config.simulation.resolved_end_date()
        self.folder = settings.paths.soak
        self.folder.mkdir(parents=True, exist_ok=True)
        self.report = SoakReport(plan.days, plan.drift_from, self.folder / "service.log")
        self.service = ServiceProcess(
            self._service_env(), _service_options(config), self.folder / "service.log"
        )

    def _service_env(self) -> dict[str, str]:
        from rankflow.tracking.server import free_port

        url = f"http://127.0.0.1:{free_port()}"
        env = self.settings.child_env({"RANKFLOW_SERVICE_URL": url})
        env.pop("MLFLOW_TRACKING_URI", None)  # the state's own registry
        return env

    def run(self) -> SoakReport:
        print(self.report.header(), flush=True)
        try:
            for day in range(1, self.plan.days + 1):
                row = self._day(day)
                self.report.add(row)
                print(self.report.line(row), flush=True)
        finally:
            self.service.stop()
        self.report.finish()
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
        self.report.write(self.folder / f"soak-{stamp}.json")
        return self.report

    def _day(self, day: int) -> DayRow:
        config = soak_config(self.config, self.first_served, self.plan, day)
        served_day = config.simulation.resolved_end_date()
        row = DayRow(day, str(served_day), self.plan.faults.get(day))
        row.drifted = self.plan.drift_from is not None and day >= self.plan.drift_from
        for stage, work in (
            ("serve", lambda: self._serve(config, served_day, row)),
            ("features-daily", lambda: self._features(day)),
            ("gap-check", lambda: self._gap_check(config, row)),
            ("canary", lambda: self._canary(config, day, row)),
        ):
            try:
                work()
            except Exception as error:  # the soak goes on; the traceback is counted
                row.errors.append(f"{stage}: {type(error).__name__}: {error}")
                with (self.folder / "errors.log").open("a") as errors:
                    errors.write(f"day {day} {stage}:\n{traceback.format_exc()}\n")
        self._archive_logs(served_day)
        return row

    def _serve(self, config: RankflowConfig, served_day: date, row: DayRow) -> None:
        from rankflow.serving.served_log import score_log_dir

        if not self.service.running:
            self.service.start()
        account = LogAccount()
        account.open(self.service.counters())
        faults = DayFaults(row.fault, self.settings, config.scoring(), self.service, account)
        traffic = served_traffic(config, self.plan, row.day)
        row.drifted_traffic = traffic.drifted
        try:
            row.traffic = send_day(
                self.service.url,
                self.settings.paths,
                config.feature_service,
                traffic,
                mix=self.plan.mix,
                seed=self.plan.seed,
                midday=faults,
            )
            account.close(self._flushed())
        finally:
            faults.finish()
        scores = score_log_dir(self.settings.paths, config.feature_service)
        row.on_disk = score_rows_on_disk(scores)
        row.log = account
        row.rss_mb = resident_mb(self.service.pid)

    def _flushed(self) -> LogCounters:
        """The counters once the writer has flushed the day: nothing buffered and two reads a
        flush interval apart equal (or whatever they are after ``FLUSH_WAIT_SECONDS``)."""
        import time

        pause = self.config.serving.log.flush_seconds + 0.5
        deadline = time.monotonic() + FLUSH_WAIT_SECONDS
        last = self.service.counters()
        while time.monotonic() < deadline:
            time.sleep(pause)
            now = self.service.counters()
            if now == last and now.buffered == 0:
                return now
            last = now
        return last

    def _features(self, day: int) -> None:
        from rankflow.sim.daily import build_simulated

        # The next morning: the window ends after the day just served.
        morning = soak_config(self.config, self.first_served, self.plan, day + 1)
        build_simulated(self.settings, morning, by="soak")

    def _gap_check(self, config: RankflowConfig, row: DayRow) -> None:
        from rankflow.monitoring.report import run_gap_check

        outcome = run_gap_check(
            self.settings, config.monitoring, config.scoring(), log_to_mlflow=True
        )
        row.verdict = outcome.verdict
        row.checks = {c.name: c.verdict for c in outcome.checks}
        row.why = [c.line() for c in outcome.checks if c.verdict != "pass"]
        row.gap_notes = outcome.notes

    def _canary(self, config: RankflowConfig, day: int, row: DayRow) -> None:
        from rankflow.canary.run import run_canary
        from rankflow.canary.triggers import retrain_on_gap_verdict
        from rankflow.sim.canary import canary_simulation

        why = retrain_on_gap_verdict(row.checks, config.canary) if row.checks else None
        if why is None and day % self.plan.canary_every == 0:
            why = "weekly"
        if why is None:
            return
        outcome = run_canary(self.settings, config.canary_run(), simulation=canary_simulation())
        truth = (outcome.online or {}).get("truth") or {}
        row.canary = {
            "why": why,
            "decision": outcome.decision,
            "reason": outcome.reason,
            "decision_right": truth.get("decision_right"),
            "truly_better": truth.get("truly_better"),
        }

    def _archive_logs(self, served_day: date) -> None:
        folder = self.settings.paths.logs / self.config.feature_service
        if folder.is_dir():
            target = self.settings.paths.logs / "soak-archive" / f"{served_day}"
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)


def _service_options(config: RankflowConfig) -> list[str]:
    """``--set`` options that give the service the soak's serving and registry sections."""
    import json

    return [
        "--set",
        f"serving={json.dumps(config.serving.model_dump(mode='json'))}",
        "--set",
        f"registry={json.dumps(config.registry.model_dump(mode='json'))}",
    ]


def run_soak(settings: Settings, config: RankflowConfig, plan: SoakPlan) -> SoakReport:
    """The soak of ``plan`` on the built state of ``settings`` (it needs a ``@champion``)."""
    from rankflow.sim.scenario import _require_champion

    _require_champion(settings, config)
    return Soak(settings, config, plan).run()
