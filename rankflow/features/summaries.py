"""The Feast stages in one line each, as the flows log them and ``rankflow features`` prints them."""

from __future__ import annotations

from pathlib import Path

from rankflow.features.store import ApplySummary, MaterializeSummary

__all__ = ["applied_line", "materialized_line"]


def applied_line(applied: ApplySummary) -> str:
    """``feast apply`` in one line: what it registered, and where Feast's own output went."""
    return (
        f"feast apply: project {applied.project}, {len(applied.feature_views)} feature views, "
        f"services {', '.join(applied.feature_services)}{_where(applied.log_file)}"
    )


def materialized_line(materialized: MaterializeSummary) -> str:
    """A materialization in one line: each view's load, and where Feast's own output went."""
    views = ", ".join(f"{view} {m.mode}" for view, m in sorted(materialized.views.items()))
    return (
        f"feast materialize up to {materialized.end:%Y-%m-%d %H:%M} UTC into "
        f"{materialized.online_store}: {views}{_where(materialized.log_file)}"
    )


def _where(log_file: Path | None) -> str:
    # None: --verbose sent Feast's output to the console, where it was just read
    return f"; full log {log_file}" if log_file else ""
