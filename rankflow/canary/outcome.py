"""What one canary run decided, with every number it decided on (printed, logged, returned)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

CanaryDecision = Literal[
    "first_champion",  # no champion yet: cold start, the train step's first-champion rule
    "no_champion",  # no champion yet and nothing passed the absolute gates
    "rejected_gates",  # the challenger failed the absolute quality gates
    "rejected_offline",  # it failed the offline gate against the champion
    "rejected_rolled_back",  # it is the very model a rollback removed from @champion
    "rejected_online",  # the canary phase found it worse (or no better by the horizon)
    "inconclusive",  # the phase ran out of traffic before the rule decided; @challenger stays
    "promoted",  # the phase found it better; it is @champion now, the old one @previous
    "aborted",  # the registry moved under the canary (another promotion); nothing changed
    "phase_started",  # live phase: @challenger serves serving.canary_share; later runs look
    "idle",  # a look-only run with no live phase to look at; nothing changed
]


@dataclass
class CanaryOutcome:
    """One canary run: the decision, why, and the evidence of each stage."""

    decision: CanaryDecision
    reason: str
    serving_model: str
    champion_before: str | None
    aliases: dict[str, str]
    challenger: dict[str, Any] | None = None  # kind, family version, serving version
    offline: dict[str, Any] | None = None
    online: dict[str, Any] | None = None
    warm_start: dict[str, Any] | None = None
    run_id: str | None = None
    seconds: float = 0.0
    stages: list[str] = field(default_factory=list)  # one line per stage, in order

    @property
    def promoted(self) -> bool:
        return self.decision in ("promoted", "first_champion")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"canary: {self.decision.upper()}: {self.reason}"]
        lines += [f"  {line}" for line in self.stages]
        shown = ", ".join(f"@{a} -> v{v}" for a, v in sorted(self.aliases.items())) or "none"
        lines.append(f"  aliases of {self.serving_model}: {shown}")
        if self.run_id:
            lines.append(f"  MLflow run  {self.run_id}")
        lines.append(f"  took {self.seconds:.1f} s")
        return "\n".join(lines)
