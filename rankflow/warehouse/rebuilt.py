"""Which feature days a warehouse build rewrote, until the online store has caught up.

``materialize-incremental`` only loads rows newer than a view's last materialization, so a
build that rewrote past days (a rewritten or removed raw partition, a lookback reload, a full
refresh) would leave the online store serving the old values: the gap check's feature skew
catches it, but nothing would repair it. The build records the earliest day it rebuilt here
(the earliest of all builds since the last materialization); the materialization reloads every
view from that day and clears the record. Every feature row from that day on may have changed,
since the rolling windows of later days include it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from rankflow.paths import StatePaths

MARKER = "rebuilt_from.json"


def _marker(paths: StatePaths) -> Path:
    return paths.warehouse.parent / MARKER


def record_rebuilt(paths: StatePaths, days: Iterable[date]) -> None:
    """Remember the earliest of ``days`` (and of any earlier record not yet materialized)."""
    days = list(days)
    if not days:
        return
    earliest = min(days)
    pending = pending_rebuild(paths)
    if pending is not None:
        earliest = min(earliest, pending.date())
    marker = _marker(paths)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"rebuilt_from": earliest.isoformat()}))


def pending_rebuild(paths: StatePaths) -> datetime | None:
    """The start (UTC midnight) of the earliest rebuilt day not yet rematerialized, or None."""
    marker = _marker(paths)
    if not marker.is_file():
        return None
    day = date.fromisoformat(json.loads(marker.read_text())["rebuilt_from"])
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def clear_rebuilt(paths: StatePaths) -> None:
    _marker(paths).unlink(missing_ok=True)
