"""Time in rankflow is UTC: the data contract reads a naive timestamp as UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any


def as_utc(value: Any) -> datetime:
    """A ``datetime`` or ``pandas.Timestamp`` as an aware UTC ``datetime``: naive values are
    UTC (the contract's rule), aware ones are converted."""
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp, without importing pandas here
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def day_start_epoch_us(day: date) -> int:
    """Microseconds since the epoch at ``day`` 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
