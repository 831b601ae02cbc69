"""What a train step did: each candidate's version, metrics and gates, and the aliases after.

:class:`TrainOutcome` is the train step's return value: the flow records it (``to_dict``) and
the CLI prints it (``render``). Kept apart from the step so that readers of a result (flows,
reports, the canary later) need not import training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankflow.jsonable import to_jsonable
from rankflow.registry.gates import KIND_TITLES, Candidate, GateResult
from rankflow.registry.promotion import CHAMPION


@dataclass
class CandidateOutcome:
    """One model family's result: its registry version, test metrics and gate verdict."""

    kind: str
    registered_model: str
    version: str
    run_id: str | None
    fingerprint: str
    metrics: dict[str, float]
    gate: GateResult
    reused: bool  # an identical earlier run's version; nothing trained or registered now
    resumed: bool = False  # training continued from a checkpoint of an interrupted run
    checkpoint_path: Path | None = None
    train_seconds: float | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_model}/{self.version}"

    def candidate(self, source: str, model_id: str | None) -> Candidate:
        return Candidate(
            kind=self.kind,
            name=self.registered_model,
            version=self.version,
            run_id=self.run_id,
            source=source,
            model_id=model_id,
            fingerprint=self.fingerprint,
            metrics=self.metrics,
            gate=self.gate,
        )


@dataclass
class TrainOutcome:
    """What :func:`train_and_register` did, and where to look (JSON-able via ``to_dict``)."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str
    data_fingerprint: str
    candidates: dict[str, CandidateOutcome]
    serving_model: str
    aliases: dict[str, str]  # serving model alias -> version, after this step
    promoted: str | None  # alias this step moved ("champion" / "challenger"), if any
    decision: str  # why the aliases are where they are
    baseline_metrics: dict[str, float] | None = None
    baseline_run_id: str | None = None
    seconds: float = 0.0
    champion: dict[str, Any] | None = None  # kind, version, metrics of the champion
    warnings: list[str] = field(default_factory=list)  # data/config diagnostics

    @property
    def champion_version(self) -> str | None:
        return self.aliases.get(CHAMPION)

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.serving_model}@{CHAMPION}"

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "tracking_uri": self.tracking_uri,
                "experiment": {"name": self.experiment_name, "id": self.experiment_id},
                "data_fingerprint": self.data_fingerprint,
                "candidates": {
                    kind: {
                        "registered_model": c.registered_model,
                        "version": c.version,
                        "model_uri": c.model_uri,
                        "run_id": c.run_id,
                        "fingerprint": c.fingerprint,
                        "metrics": c.metrics,
                        "gates": c.gate.to_dict(),
                        "reused": c.reused,
                        "resumed": c.resumed,
                        "checkpoint_path": c.checkpoint_path,
                        "train_seconds": c.train_seconds,
                    }
                    for kind, c in self.candidates.items()
                },
                "baseline": {"run_id": self.baseline_run_id, "metrics": self.baseline_metrics},
                "serving_model": self.serving_model,
                "aliases": self.aliases,
                "promoted": self.promoted,
                "decision": self.decision,
                "champion": self.champion,
                "champion_uri": self.champion_uri,
                "seconds": self.seconds,
                "warnings": self.warnings,
            }
        )

    def render(self) -> str:
        lines = [f"MLflow: {self.tracking_uri} (experiment {self.experiment_name!r})"]
        for kind, c in self.candidates.items():
            how = "existing, identical inputs" if c.reused else "new"
            if c.resumed:
                how += ", resumed from checkpoint"
            lines.append(
                f"  {KIND_TITLES.get(kind, kind):<12} {c.registered_model} v{c.version} ({how}): "
                f"test AUC {_num(c.metrics.get('auc'))}, logloss {_num(c.metrics.get('logloss'))}"
                f", NE {_num(c.metrics.get('ne'))} - gates {'passed' if c.gate.passed else 'FAILED'}"
            )
        if self.baseline_metrics:
            lines.append(f"  LR baseline  test AUC {_num(self.baseline_metrics.get('auc'))}")
        if self.aliases:
            shown = ", ".join(f"@{a} = v{v}" for a, v in sorted(self.aliases.items()))
            lines.append(f"  {self.serving_model}: {shown}")
        else:
            lines.append(f"  {self.serving_model}: no aliases")
        lines.append(f"  {self.decision}")
        if self.champion:
            metrics = self.champion.get("metrics") or {}
            shown = ", ".join(f"{k} {_num(v)}" for k, v in metrics.items())
            lines.append(
                f"  champion: {self.serving_model} v{self.champion['version']} "
                f"({KIND_TITLES.get(self.champion.get('kind') or '', '?')}): test {shown}"
            )
        if self.tracking_uri.startswith("sqlite:"):
            lines.append(
                "  MLflow UI: make mlflow-ui, then open "
                f"http://127.0.0.1:5000/#/models/{self.serving_model}"
            )
        if self.champion_version:
            lines.append(f"  score with mlflow.pyfunc.load_model({self.champion_uri!r})")
        if self.warnings:
            lines.append(f"  {len(self.warnings)} data/config warning(s):")
            lines += [f"    {w}" for w in self.warnings]
        return "\n".join(lines)


def _num(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.4f}" if math.isfinite(number) else "n/a"
