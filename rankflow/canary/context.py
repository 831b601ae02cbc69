"""One canary run's context, and how its outcome is recorded on the versions involved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.canary.outcome import CanaryOutcome
from rankflow.canary.records import record_on_versions
from rankflow.registry.aliases import aliases_of
from rankflow.registry.lock import promotion_lock

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.canary.outcome import CanaryDecision
    from rankflow.config import CanaryRunConfig
    from rankflow.settings import Settings

log = logging.getLogger("rankflow.canary.run")


@dataclass
class CanaryContext:
    """What every step of one canary run shares: where it runs and with which config, the
    registry client, the serving model and the champion it started against, its MLflow run and
    scratch folder, and the stage lines it has reported so far."""

    settings: Settings
    config: CanaryRunConfig
    client: MlflowClient
    serving: str
    champion: str
    run_id: str
    scratch: Path
    stages: list[str]

    def stage(self, line: str) -> None:
        log.info("canary: %s", line)
        self.stages.append(line)

    def outcome(self, decision: CanaryDecision, reason: str, challenger: dict) -> CanaryOutcome:
        return CanaryOutcome(
            decision=decision,
            reason=reason,
            serving_model=self.serving,
            champion_before=self.champion,
            aliases={},
            challenger=challenger,
            run_id=self.run_id,
            stages=self.stages,
        )

    def finish(self, result: CanaryOutcome, versions: list[tuple[str, str]]) -> CanaryOutcome:
        """Record the decision on the versions (and the champion's), read the aliases back."""
        result.aliases = aliases_of(self.client, self.serving)
        involved = list(versions)
        if result.decision != "aborted":
            involved.append((self.serving, self.champion))
        # Under the promotion lock, as every other write to these versions: a description
        # line is a read-modify-write and MLflow's SQL store upserts a tag by select-then-insert,
        # so two canaries recording on one version (the champion, a family version both found
        # by its fingerprint) at once would lose a line or fail on the tag's key.
        with promotion_lock(self.settings, self.serving):
            record_on_versions(self.client, result, involved)
        log.info("%s", result.summary())
        return result
