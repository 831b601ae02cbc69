"""What one gap check found: the verdict, each check's result and where the report is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankflow.monitoring.checks import CheckResult


@dataclass
class GapCheckOutcome:
    """The verdict (the worst check's), the five results, the report folder and the run."""

    verdict: str
    checks: list[CheckResult]
    report_dir: Path
    run_id: str | None = None
    model_version: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    # what reading the served log and its labels left out (rows, files), one line each
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"gap check: {self.verdict.upper()} (model version {self.model_version})"]
        lines += [f"  {c.line()}" for c in self.checks]
        lines += [f"  served log  {note}" for note in self.notes]
        lines.append(f"  report      {self.report_dir / 'report.md'}")
        if self.run_id:
            lines.append(f"  MLflow run  {self.run_id}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "model_version": self.model_version,
            "context": self.context,
            "notes": self.notes,
            "checks": {
                c.name: {"verdict": c.verdict, "summary": c.summary, "details": c.details}
                for c in self.checks
            },
        }
