"""The one JSON coercer: every kind of value a run summary holds comes out as JSON data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from rankflow.jsonable import to_jsonable


@dataclass
class _Result:
    path: Path
    when: datetime


class _Config(BaseModel):
    day: date
    share: float


def test_nested_values_become_json() -> None:
    value = {
        "result": _Result(Path("/tmp/x"), datetime(2026, 1, 2, 3, tzinfo=UTC)),
        "config": _Config(day=date(2026, 1, 2), share=0.5),
        "scalars": (np.int64(3), np.float32(0.25), np.bool_(True)),
        "array": np.arange(3),
        "nan": float("nan"),
        7: {"set": {1}},
    }
    out = to_jsonable(value)
    assert json.loads(json.dumps(out)) == out
    assert out["result"] == {"path": "/tmp/x", "when": "2026-01-02T03:00:00+00:00"}
    assert out["config"] == {"day": "2026-01-02", "share": 0.5}
    assert out["scalars"] == [3, 0.25, True]
    assert out["array"] == [0, 1, 2]
    assert out["nan"] is None
    assert out["7"] == {"set": [1]}
