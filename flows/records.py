"""What every flow run leaves behind: its config, stage timings and a summary.

Each run records the config it resolved twice: as a Prefect markdown artifact
(``<flow>-config``, on the flow run's page in the UI) and inside
``$RANKFLOW_HOME/runs/<UTC time>-<flow>-<run id>/summary.json`` (:class:`RunSummary`), which
is also what the flow returns and what ``rankflow run`` prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from flows.params import ConfigParams
from rankflow.config import RankflowConfig
from rankflow.jsonable import to_jsonable
from rankflow.paths import StatePaths

T = TypeVar("T")


@dataclass
class RunSummary:
    """What one flow run did: stage timings and each stage's result, printed and saved as JSON."""

    started_at: datetime
    state_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    summary_path: Path | None = None

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=2, sort_keys=True)

    def render(self) -> str:
        """The printout: stages, quarantine, training set, training outcome, where to look."""
        flow = self.details.get("flow", {}).get("name") or "main job"
        lines = [f"rankflow {flow} flow - state in {self.state_dir}"]
        lines += [f"  {stage:<14} {sec:7.1f} s" for stage, sec in self.stage_seconds.items()]
        lines += _quarantine_lines(self.details.get("warehouse") or {})
        lines += _training_set_lines(self.details.get("training_set") or {})
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        report = self.details.get("train_report")
        if report:
            lines += ["training:", *(f"  {line}" for line in str(report).splitlines())]
        canary = self.details.get("canary_report")
        if canary:
            lines += str(canary).splitlines()
        lines += where_to_look(self.details.get("train"))
        return "\n".join(lines)

    __str__ = render


def _quarantine_lines(warehouse: dict[str, Any]) -> list[str]:
    if "quarantine_counts" not in warehouse:
        return []
    counts = warehouse.get("quarantine_counts") or {}
    if not counts:
        return ["quarantined rows: none"]
    return ["quarantined rows by reason:"] + [
        f"  {reason:<28} {count}" for reason, count in sorted(counts.items())
    ]


def _training_set_lines(training: dict[str, Any]) -> list[str]:
    return [
        f"training set {split:<5}: {info['rows']} rows x {info['columns']} columns, "
        f"positive rate {info['positive_rate']:.4f}, {info['start']} .. {info['end']}"
        for split, info in (training.get("splits") or {}).items()
    ]


class RunRecord:
    """The summary of one flow run, filled stage by stage."""

    def __init__(
        self, flow_name: str, params: ConfigParams, config: RankflowConfig, paths: StatePaths
    ) -> None:
        self.flow_name = flow_name
        self.paths = paths
        self.summary = RunSummary(started_at=datetime.now(UTC), state_dir=paths.root)
        self.summary.details["flow"] = {
            "name": flow_name,
            "flow_run_id": str(flow_run.id) if flow_run.id else None,
            "flow_run_name": flow_run.name,
            "parent_flow_run_id": flow_run.parent_flow_run_id,
            "deployment_id": deployment.id,
            **params.describe(),
        }
        self.summary.details["config"] = config.flat()
        record_config(flow_name, params, config, paths)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.summary.stage_seconds[name] = round(time.perf_counter() - start, 2)

    def run(self, name: str, fn: Callable[[], T], detail: Callable[[T], Any] | None = None) -> T:
        """Run one stage, time it and keep ``detail(result)`` (default: the result) as its detail."""
        with self.stage(name):
            result = fn()
        self.summary.details[name] = to_jsonable(detail(result) if detail else result)
        return result

    def write(self) -> RunSummary:
        """Save ``summary.json`` and the summary artifact; return the summary."""
        stamp = self.summary.started_at.strftime("%Y%m%dT%H%M%SZ")
        run_id = (self.summary.details["flow"]["flow_run_id"] or "local")[:8]
        run_dir = self.paths.runs / f"{stamp}-{self.flow_name}-{run_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.summary.summary_path = run_dir / "summary.json"
        self.summary.summary_path.write_text(self.summary.to_json())
        create_markdown_artifact(
            key=f"{self.flow_name}-summary",
            markdown=f"```\n{self.summary.render()}\n```",
            description=f"rankflow {self.flow_name}: stage timings and results",
        )
        return self.summary


def record_config(
    flow_name: str, params: ConfigParams, config: RankflowConfig, paths: StatePaths
) -> None:
    """The resolved config as a markdown artifact on the flow run (key ``<flow>-config``)."""
    resolved = yaml.safe_dump(
        json.loads(config.model_dump_json()), sort_keys=False, default_flow_style=False
    )
    overrides = yaml.safe_dump(dict(params.overrides), default_flow_style=False).strip()
    markdown = "\n".join(
        [
            f"# rankflow config of this `{flow_name}` run",
            "",
            f"- file: `{params.resolved_path()}`",
            f"- state dir: `{paths.root}`",
            "- overrides:" + (f"\n\n```yaml\n{overrides}\n```" if params.overrides else " none"),
            "",
            "## Resolved",
            "",
            f"```yaml\n{resolved}```",
        ]
    )
    create_markdown_artifact(
        key=f"{flow_name}-config",
        markdown=markdown,
        description=f"The validated rankflow config the {flow_name} run used",
    )


def where_to_look(train: dict[str, Any] | None) -> list[str]:
    """The MLflow UI command and URL, and the champion, from a training outcome's dict."""
    if not train:
        return []
    from rankflow.tracking.setup import is_local_store

    uri = str(train.get("tracking_uri") or "")
    experiment = (train.get("experiment") or {}).get("id")
    page = f"#/experiments/{experiment}" if experiment else ""
    if is_local_store(uri):
        lines = [f"MLflow UI: make mlflow-ui, then open http://127.0.0.1:5000/{page}"]
    else:
        lines = [f"MLflow UI: {uri.rstrip('/')}/{page}"]
    champion = train.get("champion")
    if champion:
        metrics = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in sorted((champion.get("metrics") or {}).items())
        )
        lines.append(
            f"champion: {champion.get('uri')} = version {champion.get('version')} "
            f"({champion.get('kind')}): {metrics or 'no metrics'}"
        )
    else:
        lines.append("champion: none yet (see the decision above)")
    return lines
