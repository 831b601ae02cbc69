"""What a warehouse build returns, and the stopwatch that times its steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class WarehouseResult:
    """What a successful build produced."""

    warehouse_path: Path
    exports_dir: Path
    raw_dir: Path
    as_of: datetime
    full_refresh: bool
    invocation_id: str
    row_counts: dict[str, int]
    quarantine_counts: dict[str, int]
    exports: dict[str, Path]
    run_summary: dict[str, int]
    dbt_summary: str  # dbt's run in one line: models and tests by outcome, time, its full log
    dbt_target_dir: Path  # manifest.json and run_results.json of this build (lineage)
    warnings: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    plan: str = ""  # what the build redid: full (why) or which days
    skipped: list[str] = field(default_factory=list)  # raw paths that are not data
    decoded: list[str] = field(default_factory=list)  # raw files read page by page (new/changed)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, in build order

    def __str__(self) -> str:
        lines = [
            f"warehouse {self.warehouse_path} built in {self.elapsed_seconds:.1f} s "
            f"({'full refresh' if self.full_refresh else 'incremental'}, as_of {self.as_of:%Y-%m-%d %H:%M:%S} UTC)",
            self.dbt_summary,
            "rows:",
            *(f"  {name:<38} {count:>10}" for name, count in sorted(self.row_counts.items())),
        ]
        if self.quarantine_counts:
            lines.append("quarantined impressions by reason:")
            lines += [f"  {r:<38} {n:>10}" for r, n in sorted(self.quarantine_counts.items())]
        else:
            lines.append("quarantined impressions: none")
        lines.append(f"plan: {self.plan}")
        lines.append(f"contract check: pages decoded in {len(self.decoded)} new or changed file(s)")
        if self.skipped:
            lines.append(f"skipped raw paths (not data): {', '.join(self.skipped)}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append(f"exports: {self.exports_dir}")
        if self.phases:
            lines.append("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.phases.items()))
        return "\n".join(lines)


class Stopwatch:
    """Seconds spent per named step of one build (where a daily build's time goes)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start
