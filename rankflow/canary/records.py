"""What a canary writes down: an MLflow run with its numbers, and tags + description lines on
every registry version it decided about (the MLflow UI shows both on the version's page)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rankflow.registry.versions import record_note

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.canary.outcome import CanaryOutcome
    from rankflow.tracking.setup import Tracking

PREFIX = "rankflow.canary."
TAG_RUN_KIND = "rankflow.run_kind"


def start_canary_run(tracking: Tracking, serving: str, champion: str | None) -> str:
    """An MLflow run for this canary, in the project's experiment (open until it decides)."""
    client = tracking.client
    tags = {
        TAG_RUN_KIND: "canary",
        "rankflow.model_name": serving,
        PREFIX + "started_against": champion or "none",
        "mlflow.runName": f"canary vs v{champion}" if champion else "canary (cold start)",
    }
    return client.create_run(tracking.experiment_id, tags=tags).info.run_id


def _flat(prefix: str, data: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(name + "_", value))
        elif isinstance(value, int | float) and math.isfinite(float(value)):  # bool is an int
            out[name] = float(value)
    return out


def finish_canary_run(client: MlflowClient, run_id: str, outcome: CanaryOutcome) -> None:
    """Numbers as metrics, the whole outcome as ``canary.json``, the decision as tags."""
    metrics: dict[str, float] = {}
    if outcome.offline:
        metrics.update(_flat("offline_", outcome.offline.get("intervals", {})))
        metrics.update(_flat("offline_", outcome.offline.get("calibration", {})))
    if outcome.online:
        keep = ("p_value", "ctr_champion", "ctr_challenger", "views_champion", "views_challenger")
        metrics.update(_flat("online_", {k: outcome.online[k] for k in keep}))
        metrics.update(_flat("online_", outcome.online.get("arms", {})))
        metrics.update(_flat("online_truth_", outcome.online.get("truth", {})))
    if outcome.warm_start:
        metrics.update(_flat("", outcome.warm_start.get("metrics", {})))
    for key, value in metrics.items():
        client.log_metric(run_id, key[:250], value)
    client.log_dict(run_id, outcome.to_dict(), "canary.json")
    client.set_tag(run_id, PREFIX + "decision", outcome.decision)
    client.set_tag(run_id, PREFIX + "reason", outcome.reason[:5000])
    if outcome.challenger:
        client.set_tag(run_id, PREFIX + "challenger", str(outcome.challenger.get("label")))
    client.set_terminated(run_id, "FINISHED")


def version_tags(outcome: CanaryOutcome) -> dict[str, str]:
    """The decision and its numbers, as tags for the versions involved."""
    tags = {
        PREFIX + "decision": outcome.decision,
        PREFIX + "reason": outcome.reason[:5000],
        PREFIX + "started_against": outcome.champion_before or "none",
    }
    if outcome.run_id:
        tags[PREFIX + "run_id"] = outcome.run_id
    if outcome.offline:
        for metric, interval in outcome.offline.get("intervals", {}).items():
            tags[f"{PREFIX}offline.{metric}_diff"] = (
                f"{interval['difference']:+.5f} [{interval['low']:+.5f}, {interval['high']:+.5f}]"
            )
        tags[PREFIX + "offline.passed"] = str(outcome.offline.get("passed")).lower()
    if outcome.online:
        on = outcome.online
        tags[PREFIX + "online.p_value"] = f"{on['p_value']:.4g}"
        tags[PREFIX + "online.views"] = (
            f"champion {on['views_champion']}, challenger {on['views_challenger']}"
        )
        tags[PREFIX + "online.ctr"] = (
            f"champion {on['ctr_champion']:.5f}, challenger {on['ctr_challenger']:.5f}"
        )
    return tags


def note_lines(outcome: CanaryOutcome) -> str:
    """One description line: decision, reason, the run. The stages are the run's
    (``canary.json``): a version's description holds a bounded history
    (:func:`rankflow.registry.versions.with_note`), one line per decision."""
    run = f" (canary run `{outcome.run_id}`)" if outcome.run_id else ""
    return f"canary {outcome.decision}: {outcome.reason}.{run}"


def record_on_versions(
    client: MlflowClient, outcome: CanaryOutcome, versions: list[tuple[str, str]]
) -> None:
    """Tags and a dated description line on each (registered model, version)."""
    tags = version_tags(outcome)
    note = note_lines(outcome)
    for name, version in versions:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        record_note(client, name, version, note)
