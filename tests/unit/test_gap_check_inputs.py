"""What the gap check makes of the served log as production writes it: plain ``/score``
traffic without labels is reported as not assessed, not a traceback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from rankflow.monitoring import checks
from rankflow.monitoring.config import MonitoringConfig
from rankflow.monitoring.report import labelled_served
from rankflow.paths import StatePaths
from rankflow.serving.labels import write_labels
from tests.fixtures.served_log_files import DAY, SERVICE, log, request


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path)


def _labels(request_id: str, items: list[int]) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "__request_id": [request_id] * n,
            "item_id": items,
            "position": [1] * n,
            "label": [0] * n,
            "p_true": [0.1] * n,
            "mode": ["log"] * n,
        }
    )


def test_plain_score_traffic_without_labels_is_not_assessed(paths: StatePaths) -> None:
    """``/score`` traffic that no replay labelled: the metric gap says so (a warning, as for
    too few labelled rows), naming what it needs."""
    log(paths, *request("r1", DAY, DAY, [1, 2, 3]))

    labelled = labelled_served(paths, SERVICE)
    result = checks.metric_gap(labelled, {"1": {"auc": 0.7}}, MonitoringConfig())

    assert labelled.empty
    assert result.verdict == "warn"
    assert "no labelled served traffic" in result.summary
    assert "(__request_id, item_id)" in result.summary


def test_labels_of_other_requests_leave_the_metric_gap_not_assessed(paths: StatePaths) -> None:
    log(paths, *request("r1", DAY, DAY, [1, 2]))
    write_labels(paths, SERVICE, _labels("another", [1, 2]), "day")

    labelled = labelled_served(paths, SERVICE)
    result = checks.metric_gap(labelled, {}, MonitoringConfig())

    assert result.verdict == "warn" and "no labelled served traffic" in result.summary


def test_a_frame_without_columns_is_not_assessed() -> None:
    result = checks.metric_gap(pd.DataFrame(), {}, MonitoringConfig())
    assert result.verdict == "warn" and "no labelled served traffic" in result.summary


def test_labelled_retried_rows_are_judged_once(paths: StatePaths) -> None:
    log(paths, *request("r1", DAY, DAY, [1, 2]))
    log(paths, *request("r1", DAY, DAY + timedelta(seconds=3), [1, 2]))
    write_labels(paths, SERVICE, _labels("r1", [1, 2]), "day")
    assert len(labelled_served(paths, SERVICE)) == 2
