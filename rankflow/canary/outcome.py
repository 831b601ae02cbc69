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


KEEPS = "the champion keeps serving"
# What the operator does after each decision (the summary's last line). The inconclusive
# simulated phase is the one case that differs by phase: see CanaryOutcome.next_step.
NEXT_STEPS: dict[str, str] = {
    "first_champion": "serve it (`rankflow serve`); later canaries (`rankflow canary`, the "
    "canary-weekly deployment) retrain against it",
    "no_champion": "nothing serves yet: fix what failed the quality gates above (the data, the "
    "model config, or registry.gates if they are wrong for your data), then `rankflow run`",
    "rejected_gates": f"{KEEPS}; if this repeats, check the data (`rankflow gap-check`) before "
    "retraining or loosening registry.gates",
    "rejected_offline": f"{KEEPS}; the next canary retrains on newer data; a failed blocking gap "
    "check must be fixed in the data first (`rankflow gap-check`)",
    "rejected_rolled_back": f"{KEEPS}; newer data or a changed model config makes a new model; to "
    "canary this one anyway: `rankflow --set canary.allow_rolled_back=true canary`",
    "rejected_online": f"{KEEPS}; the next scheduled canary retrains on newer data",
    "inconclusive": f"{KEEPS}, the challenger stays @challenger; nothing to do: the next look "
    "(the daily canary-look deployment, or `rankflow canary --look-only`) decides on more "
    "traffic, by canary.online.max_views views per arm at the latest",
    "promoted": "deployed services load it within serving.alias_poll_seconds; if it misbehaves, "
    '`rankflow rollback --reason "..."` puts @previous back',
    "aborted": "the registry moved under this canary (another promotion or a rollback): run "
    "`rankflow canary` again against the current champion",
    "phase_started": "keep `rankflow serve` running with serving.canary_share > 0; each later "
    "`rankflow canary --look-only` (the daily canary-look deployment) looks and decides",
    "idle": "nothing to do; `rankflow canary` (without --look-only) starts a canary",
}
INCONCLUSIVE_SIMULATED = (
    f"{KEEPS}, the challenger stays @challenger; to decide, give the phase more traffic "
    "(raise canary.traffic_impressions) and run `rankflow canary` again"
)


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

    @property
    def next_step(self) -> str:
        """What to do now: every decision has one (the summary's last line)."""
        live = (self.challenger or {}).get("kind") == "live"
        if self.decision == "inconclusive" and not live:
            return INCONCLUSIVE_SIMULATED
        return NEXT_STEPS[self.decision]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "next_step": self.next_step}

    def summary(self) -> str:
        lines = [f"canary: {self.decision.upper()}: {self.reason}"]
        lines += [f"  {line}" for line in self.stages]
        shown = ", ".join(f"@{a} -> v{v}" for a, v in sorted(self.aliases.items())) or "none"
        lines.append(f"  aliases of {self.serving_model}: {shown}")
        if self.run_id:
            lines.append(f"  MLflow run  {self.run_id}")
        lines.append(f"  took {self.seconds:.1f} s")
        lines.append(f"  next: {self.next_step}")
        return "\n".join(lines)
