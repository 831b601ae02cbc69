"""One way to turn rankflow's results into JSON-ready data (run summaries, MLflow params)."""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dataclasses, pydantic models, paths, dates, numpy scalars
    and arrays included; non-finite floats become ``None`` (JSON has no NaN); anything else
    becomes its ``str``."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path | datetime | date):
        return value.isoformat() if isinstance(value, datetime | date) else str(value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_jsonable(value.tolist())
    return str(value)
