"""What the simulation gives a canary run (:mod:`rankflow.canary.simulation`): the closed-loop
phase on the simulator's traffic and the warm-vs-cold measurement. The composition roots
(``rankflow canary``, the canary flow, the drift scenario) pass :func:`canary_simulation` to
:func:`rankflow.canary.run.run_canary`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankflow.canary.simulation import CanarySimulation, WarmStartReport, WarmStartRequest
from rankflow.sim.canary_phase import simulated_phase


class WarmVsCold:
    """:mod:`rankflow.sim.warm_measure` as the canary run calls it: stored by its inputs (a
    re-proposed challenger is not measured again), the challenger's own run as the warm arm
    when it is the run the measurement would train. The caller holds the training lock."""

    def measuring_overrides(
        self, model_config_path: Path, overrides: dict[str, Any], train_rows: int
    ) -> dict[str, Any]:
        from rankflow.sim.warm_measure import measuring_overrides_of

        return measuring_overrides_of(model_config_path, overrides, train_rows)

    def measure(self, request: WarmStartRequest) -> WarmStartReport:
        from models.config import load_model_config
        from rankflow.sim import warm_measure as wm

        model_config = load_model_config(request.model_config_path, request.model_overrides)
        seed = model_config.training.seed
        comparison, stored = wm.measure_warm_start_cached(
            request.cache_dir,
            wm.measurement_key(request.candidate.fingerprint, seed),
            request.candidate.kind,
            request.training_set,
            model_config,
            request.champion_checkpoint,
            request.scratch,
            seed=seed,
            challenger_checkpoint=request.challenger_checkpoint,
        )
        return WarmStartReport(comparison.summary(), comparison.to_metrics(), stored)


def canary_simulation() -> CanarySimulation:
    """Every simulation part a canary run may use."""
    return CanarySimulation(phase=simulated_phase, warm_start=WarmVsCold())
