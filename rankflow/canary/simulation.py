"""The parts of a canary run that only the simulation can play, as interfaces.

A simulated canary phase needs the simulator's ground truth (closed-loop traffic, clicks drawn
from it), and the warm-vs-cold measurement is a second, cold training kept for demos and
benchmarks. Both live in :mod:`rankflow.sim`, above this package; production imports nothing
from there. The composition root (``rankflow canary``, the canary flow, the drift scenario)
builds a :class:`CanarySimulation` (:func:`rankflow.sim.canary.canary_simulation`) and hands it
to :func:`rankflow.canary.run.run_canary`, which refuses before any training a configuration
that needs a part it was not given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rankflow.errors import ConfigError

if TYPE_CHECKING:
    from rankflow.canary.stats import OnlineDecision
    from rankflow.config import CanaryConfig, RankflowConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.registry.gates import Candidate
    from rankflow.settings import Settings


@dataclass(frozen=True)
class PhaseRequest:
    """What a simulated phase is given: where it runs, the two versions to serve pinned, the
    fresh window (its users' clicks are the CUPED pre-period) and the canary run's id."""

    settings: Settings
    config: RankflowConfig
    champion: str
    challenger: str
    window: TrainingSet
    run_id: str


class PhaseReport(Protocol):
    """What the run reads of a phase: the online decision, its record and its summary."""

    @property
    def decision(self) -> OnlineDecision: ...

    def to_dict(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


class SimulatedPhase(Protocol):
    """Serve both versions on simulated traffic and decide with the online rule."""

    def __call__(self, request: PhaseRequest) -> PhaseReport: ...


@dataclass(frozen=True)
class WarmStartRequest:
    """The challenger just trained warm and what a cold start at the same budget needs."""

    candidate: Candidate
    training_set: TrainingSet
    model_config_path: Path
    model_overrides: dict[str, Any]
    champion_checkpoint: Path
    challenger_checkpoint: Path
    cache_dir: Path
    scratch: Path


@dataclass(frozen=True)
class WarmStartReport:
    """The comparison's summary and metrics; ``stored``: read back from an identical one."""

    summary: str
    metrics: dict[str, float]
    stored: bool

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "metrics": self.metrics, "stored": self.stored}


class WarmStartMeasurement(Protocol):
    """Warm against cold start at an equal budget (``canary.measure_warm_start``)."""

    def measuring_overrides(
        self, model_config_path: Path, overrides: dict[str, Any], train_rows: int
    ) -> dict[str, Any]:
        """Model-config overrides that make the challenger the measurement's warm arm."""
        ...

    def measure(self, request: WarmStartRequest) -> WarmStartReport: ...


@dataclass(frozen=True)
class CanarySimulation:
    """The simulation's parts a canary run may use; None: not available to this caller."""

    phase: SimulatedPhase | None = None
    warm_start: WarmStartMeasurement | None = None


def check_simulation(
    canary: CanaryConfig, phase_kind: str, simulation: CanarySimulation | None
) -> None:
    """Refuse before any training a canary whose config needs a simulation part the caller
    did not give (one line, names the key)."""
    given = simulation or CanarySimulation()
    if phase_kind == "simulated" and given.phase is None:
        raise ConfigError(
            "canary.phase: simulated needs the simulator's closed loop, which this caller did "
            "not provide (run_canary(..., simulation=rankflow.sim.canary.canary_simulation()), "
            "as `rankflow canary` and the canary flow do); or use canary.phase: live"
        )
    if canary.measure_warm_start and given.warm_start is None:
        raise ConfigError(
            "canary.measure_warm_start: true needs the warm-vs-cold measurement, which this "
            "caller did not provide (run_canary(..., simulation=rankflow.sim.canary."
            "canary_simulation())); or set canary.measure_warm_start: false"
        )
