"""The live phase reads the score log as the service writes it: retries, unreadable files,
far request times, and rows of other versions or from before the phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.canary.served import served_rows
from rankflow.paths import StatePaths
from rankflow.serving.served_log import SCORE_SCHEMA, score_log_dir

SERVICE = "ctr_ranker_v1"
START = datetime(2026, 3, 12, tzinfo=UTC)


def _rows(request: str, items: list[int], arm: str, version: str, p: float, **at) -> dict:
    served = at.get("served", START + timedelta(hours=1))
    requested = at.get("requested", served)
    n = len(items)
    return {
        "__request_id": [request] * n,
        "__log_timestamp": [requested] * n,
        "__served_at": [served] * n,
        "user_id": [7] * n,
        "item_id": items,
        "position": list(range(1, n + 1)),
        "p_click": [p] * n,
        "rank": list(range(1, n + 1)),
        "model_name": ["rankflow-ctr"] * n,
        "model_version": [version] * n,
        "model_kind": ["dcn"] * n,
        "arm": [arm] * n,
    }


def _write(folder, name: str, *parts: dict) -> None:
    columns = {key: [v for part in parts for v in part[key]] for key in SCORE_SCHEMA.names}
    pq.write_table(pa.Table.from_pydict(columns, schema=SCORE_SCHEMA), folder / name)


def test_retries_count_once_and_what_is_left_out_is_said(tmp_path) -> None:
    paths = StatePaths(tmp_path)
    folder = score_log_dir(paths, SERVICE)
    folder.mkdir(parents=True)
    later = START + timedelta(hours=2)
    _write(
        folder,
        "a.parquet",
        _rows("r1", [1, 2], "champion", "3", 0.1),
        _rows("r2", [1], "challenger", "5", 0.2),
        _rows("old", [1], "champion", "3", 0.1, served=START - timedelta(days=1)),
        _rows("other", [1], "challenger", "4", 0.1),  # a version not in the phase
        _rows("far", [9], "champion", "3", 0.1, requested=datetime(9999, 12, 31, tzinfo=UTC)),
    )
    _write(folder, "b.parquet", _rows("r1", [1, 2], "champion", "3", 0.3, served=later))
    good = (folder / "b.parquet").read_bytes()
    (folder / "c.parquet").write_bytes(good[: len(good) // 2])  # copied half way

    read = served_rows(paths, SERVICE, "3", "5", START)

    frame = read.frame.sort_values(["request_id", "item_id"])
    assert list(zip(frame["request_id"], frame["item_id"], strict=True)) == [
        ("r1", 1),
        ("r1", 2),
        ("r2", 1),
    ]
    assert frame.loc[frame["request_id"] == "r1", "p_click"].tolist() == [0.3, 0.3]  # last
    assert read.retried_rows == 2 and read.retried_examples == ["r1"]
    assert [u.path.name for u in read.unreadable] == ["c.parquet"]
    assert sum(o.rows for o in read.out_of_range) == 1
    notes = "\n".join(read.notes())
    assert "c.parquet" in notes and "client retries" in notes and "far" in notes
    assert read.to_dict()["rows"] == 3


def test_a_clean_log_says_nothing_and_no_log_is_no_rows(tmp_path) -> None:
    paths = StatePaths(tmp_path)
    assert served_rows(paths, SERVICE, "3", "5", START).frame.empty
    folder = score_log_dir(paths, SERVICE)
    folder.mkdir(parents=True)
    _write(folder, "a.parquet", _rows("r1", [1, 2], "champion", "3", 0.1))
    read = served_rows(paths, SERVICE, "3", "5", START.replace(tzinfo=None))  # naive = UTC
    assert len(read.frame) == 2 and read.notes() == []
