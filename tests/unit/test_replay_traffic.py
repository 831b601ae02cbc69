"""The traffic split shared by the log replay and the closed loop: requests in the order they
first appear, each item once with its first row, and the labels gathered into one frame."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest

from rankflow.errors import RankflowError
from rankflow.serving.replay import HttpScorer, ReplayLabels, _requests, request_body


def _frame() -> pd.DataFrame:
    # Request "b" starts before "a" ends; "a" shows item 7 twice (its first row counts).
    return pd.DataFrame(
        {
            "request_id": ["a", "b", "a", "a", "b", "c"],
            "user_id": [1, 2, 1, 1, 2, 3],
            "item_id": [7, 8, 9, 7, 7, 5],
            "position": [1, 1, 2, 3, 2, 1],
            "device": ["ios", "web", "ios", "ios", "web", "android"],
            "event_timestamp": pd.to_datetime(["2026-12-01T10:00:00Z"] * 6),
            "p_click": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    )


def test_requests_come_in_order_of_first_appearance_each_item_once() -> None:
    requests = list(_requests(_frame(), None))
    assert [r.first("request_id") for r in requests] == ["a", "b", "c"]
    a = requests[0]
    assert a["item_id"].tolist() == [7, 9] and a["position"].tolist() == [1, 2]
    assert a["p_click"].tolist() == [0.1, 0.3]  # the first row of item 7, not the repeat
    assert len(requests[1]) == 2 and requests[1]["item_id"].tolist() == [8, 7]
    assert [r.first("request_id") for r in _requests(_frame(), 2)] == ["a", "b"]
    assert list(_requests(_frame().iloc[:0], None)) == []


def test_a_request_body_is_plain_json_types() -> None:
    body = request_body(next(_requests(_frame(), None)), "run-a", with_positions=True)
    assert body == {
        "request_id": "run-a",
        "user_id": 1,
        "item_ids": [7, 9],
        "device": "ios",
        "time": "2026-12-01T10:00:00+00:00",
        "positions": [1, 2],
    }
    assert all(type(v) is int for v in body["item_ids"] + body["positions"])


def test_labels_are_one_frame_keyed_by_request_and_item() -> None:
    labels = ReplayLabels("closed")
    assert labels.frame().empty
    labels.add("r1", np.array([4, 2]), np.array([1, 2]), np.array([0, 1]), np.array([0.1, 0.2]))
    labels.add("r2", [3], [1], [1], [0.5])
    frame = labels.frame()
    assert frame["__request_id"].tolist() == ["r1", "r1", "r2"]
    assert frame["item_id"].tolist() == [4, 2, 3] and frame["label"].tolist() == [0, 1, 1]
    assert frame["mode"].unique().tolist() == ["closed"]
    assert {k: str(v) for k, v in frame.dtypes.items()} == {
        "__request_id": "object",
        "item_id": "int64",
        "position": "int32",
        "label": "int32",
        "p_true": "float64",
        "mode": "object",
    }


def test_no_service_at_the_url_is_one_line_saying_to_start_one() -> None:
    """``replay --http`` with nothing listening: a RankflowError (the CLI prints one line, no
    traceback) naming the URL and what to do, not httpx's ConnectError."""
    with socket.socket() as probe:  # a port that was free a moment ago, closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scorer = HttpScorer(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(RankflowError) as error:
        scorer({"user_id": 1, "item_ids": [1]})
    scorer.close()
    message = str(error.value)
    assert f"no scoring service answers at http://127.0.0.1:{port}" in message
    assert "`rankflow serve`" in message and "RANKFLOW_SERVICE_URL" in message
    assert "\n" not in message
