"""The canary takes its simulated parts from the caller: a config that needs one it was not
given is refused in one line, before anything is trained or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.canary.run import run_canary
from rankflow.canary.simulation import CanarySimulation, check_simulation
from rankflow.config import RankflowConfig, parse_config
from rankflow.errors import ConfigError
from rankflow.settings import Settings
from rankflow.sim.canary import canary_simulation


def test_the_shipped_defaults_train_no_extra_cold_model() -> None:
    assert parse_config({}).canary.measure_warm_start is False


def test_a_simulated_phase_without_the_simulation_is_refused_before_any_training(
    tmp_path: Path,
) -> None:
    config = parse_config({"source": "simulate", "canary": {"phase": "simulated"}})
    settings = Settings.resolve(home=tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"canary\.phase: simulated needs") as refused:
        run_canary(settings, config)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # no tracking store, no lock, no scratch


@pytest.mark.parametrize(
    "simulation",
    [None, CanarySimulation(phase=canary_simulation().phase)],
    ids=["nothing", "a phase only"],
)
def test_the_warm_start_measurement_without_its_part_is_refused(
    simulation: CanarySimulation | None,
) -> None:
    canary = parse_config({"canary": {"measure_warm_start": True}}).canary
    with pytest.raises(ConfigError, match=r"canary\.measure_warm_start: true needs"):
        check_simulation(canary, "simulated" if simulation else "live", simulation)


def test_a_live_phase_needs_nothing_of_the_simulation() -> None:
    canary = parse_config({"canary": {"measure_warm_start": False}}).canary
    check_simulation(canary, "live", None)


def test_the_composition_roots_simulation_has_every_part() -> None:
    canary = parse_config({"canary": {"measure_warm_start": True}}).canary
    full = canary_simulation()
    assert full.phase is not None and full.warm_start is not None
    check_simulation(canary, "simulated", full)


@pytest.mark.parametrize(
    ("given", "measured"),
    [([], True), (["--set", "canary.measure_warm_start=false"], False)],
    ids=["default", "set off"],
)
def test_the_demo_turns_the_measurement_on_unless_told_otherwise(
    given: list[str], measured: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rankflow demo`` runs the scenario with the warm-vs-cold measurement; a ``--set``
    still wins. The scenario itself (minutes) is tests/e2e/test_canary.py's."""
    from rankflow import cli
    from rankflow.sim import scenario

    seen: list[bool] = []

    class Report:
        def summary(self) -> str:
            return "scenario summary"

    def recorded(settings: Settings, config: RankflowConfig, **_: object) -> Report:
        seen.append(config.canary.measure_warm_start)
        return Report()

    monkeypatch.setattr(scenario, "run_scenario", recorded)
    assert cli.main(["--home", str(tmp_path), *given, "demo"]) == 0
    assert seen == [measured]
