"""What every flow run leaves behind: its config, stage timings and a summary.

Each run records the config it resolved twice: as a Prefect markdown artifact
(``<flow>-config``, on the flow run's page in the UI) and inside
``$RANKFLOW_HOME/runs/<UTC time>-<flow>-<run id>/summary.json``, the same layout the CLI's main
job writes (:class:`rankflow.pipeline.MainJobSummary`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from flows.params import ConfigParams
from rankflow.config import RankflowConfig
from rankflow.paths import StatePaths
from rankflow.pipeline import MainJobSummary

T = TypeVar("T")


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses, paths, dates and numpy scalars included."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if hasattr(value, "model_dump"):
        return plain(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if isinstance(value, Path | datetime | date):
        return str(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


class RunRecord:
    """The summary of one flow run, filled stage by stage."""

    def __init__(
        self, flow_name: str, params: ConfigParams, config: RankflowConfig, paths: StatePaths
    ) -> None:
        self.flow_name = flow_name
        self.paths = paths
        self.summary = MainJobSummary(started_at=datetime.now(UTC), state_dir=paths.root)
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
        self.summary.details[name] = plain(detail(result) if detail else result)
        return result

    def write(self) -> MainJobSummary:
        """Save ``summary.json`` and the summary artifact; return the summary."""
        stamp = self.summary.started_at.strftime("%Y%m%dT%H%M%SZ")
        run_id = (self.summary.details["flow"]["flow_run_id"] or "local")[:8]
        run_dir = self.paths.runs / f"{stamp}-{self.flow_name}-{run_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.summary.summary_path = run_dir / "summary.json"
        self.summary.summary_path.write_text(self.summary.to_json())
        create_markdown_artifact(
            key=f"{self.flow_name}-summary",
            markdown=f"```\n{render(self.summary)}\n```",
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


def render(summary: MainJobSummary) -> str:
    """The main job's printout, plus the training outcome and where to look, if there was one."""
    flow = summary.details.get("flow", {}).get("name")
    lines = summary.render().splitlines()
    if flow:
        lines[0] = lines[0].replace("rankflow main job", f"rankflow {flow} flow", 1)
    report = summary.details.get("train_report")
    if report:
        lines += ["training:", *(f"  {line}" for line in str(report).splitlines())]
    lines += where_to_look(summary.details.get("train"))
    return "\n".join(lines)


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
