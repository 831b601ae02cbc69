"""What starts a canary besides its weekly schedule: a gap check's verdicts,
and what the offline gate reads of the latest one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rankflow.config import CanaryConfig
    from rankflow.paths import StatePaths


def latest_gap_verdicts(paths: StatePaths) -> dict[str, str]:
    """check name -> verdict of the newest gap-check report under ``<home>/reports``."""
    reports = sorted(paths.reports.glob("gap-check-*/summary.json"))
    if not reports:
        return {}
    data = json.loads(reports[-1].read_text())
    return {name: check["verdict"] for name, check in data.get("checks", {}).items()}


def retrain_on_gap_verdict(verdicts: dict[str, str], canary: CanaryConfig) -> str | None:
    """Why a gap check's verdicts should start a canary, or None.

    Only a failing check that a retrain can fix starts one (drift, the metric gap); when every
    failing check is a data check (``canary.offline.blocking_gap_checks``: skew, freshness) a
    retrain on the same broken data would be blocked by the offline gate anyway: fix the data.
    """
    if not canary.on_gap_fail:
        return None
    failing = sorted(name for name, verdict in verdicts.items() if verdict == "fail")
    fixable = [name for name in failing if name not in canary.offline.blocking_gap_checks]
    if not fixable:
        return None
    return f"gap check failed on {', '.join(fixable)}"
