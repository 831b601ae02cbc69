"""What the gap check makes of the served log as production writes it: plain ``/score``
traffic without labels, and a log whose rows were skipped, are reported, not a traceback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from rankflow.monitoring import checks
from rankflow.monitoring.config import MonitoringConfig
from rankflow.monitoring.outcome import GapCheckOutcome
from rankflow.monitoring.report import GapCheckError, labelled_served, served_rows
from rankflow.paths import StatePaths
from rankflow.serving.labels import write_labels
from tests.fixtures.served_log_files import DAY, SERVICE, log, request, truncate


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


def test_the_checked_rows_come_with_what_was_skipped(paths: StatePaths) -> None:
    """The gap check's own loading: duplicates and unreadable files reach its output."""
    log(paths, *request("r1", DAY, DAY, [1, 2]))
    log(paths, *request("r1", DAY, DAY + timedelta(seconds=3), [1, 2]))
    broken = log(paths, *request("r2", DAY, DAY + timedelta(seconds=5), [1, 2]))
    truncate(broken)

    served, sample = served_rows(paths, SERVICE, MonitoringConfig())

    assert len(served.frame) == len(sample) == 2
    assert served.duplicate_rows == 2
    outcome = GapCheckOutcome("pass", [], paths.reports / "x", notes=served.notes())
    text = outcome.summary()
    assert "served log" in text and str(broken) in text and "__request_id" in text
    assert outcome.to_dict()["notes"] == served.notes()


def test_a_log_with_nothing_readable_is_an_error_that_names_the_files(
    paths: StatePaths,
) -> None:
    broken = log(paths, *request("r1", DAY, DAY, [1, 2]))
    truncate(broken)
    with pytest.raises(GapCheckError, match="no served rows") as error:
        served_rows(paths, SERVICE, MonitoringConfig())
    assert str(broken) in str(error.value)


def test_labels_written_twice_count_once_and_unlogged_impressions_are_counted(
    paths: StatePaths,
) -> None:
    """A replay written twice (one label disagreeing) and impressions the service never
    logged (its log was off): each impression judged once, the rest counted and named."""
    from rankflow.serving.labels import load_labels, match_labels

    log(paths, *request("r1", DAY, DAY, [1, 2]))
    write_labels(paths, SERVICE, _labels("r1", [1, 2]), "a-first")
    again = _labels("r1", [1, 2])
    again.loc[again["item_id"] == 2, "label"] = 1
    write_labels(paths, SERVICE, again, "b-again")
    write_labels(paths, SERVICE, _labels("unlogged", [5, 6, 7]), "c-unlogged")

    matched = match_labels(pd.DataFrame(), load_labels(paths, SERVICE)[0]).frame
    assert matched.empty  # nothing served: nothing judged
    served_log, _ = served_rows(paths, SERVICE, MonitoringConfig())
    match = match_labels(served_log.frame, load_labels(paths, SERVICE)[0])

    assert len(match.frame) == 2  # r1's two items, once each
    assert match.frame.set_index("item_id")["label"].to_dict() == {1: 0, 2: 1}  # last written
    assert (match.repeated, match.disagreeing) == (2, 1)
    assert (match.labels, match.unmatched, match.unmatched_examples) == (5, 3, ["unlogged"])
    notes = " ".join(match.notes())
    assert "3 of 5 labelled impressions have no served row" in notes and "unlogged" in notes
    assert "2 label rows repeat" in notes and "1 of them with another click" in notes
    assert len(labelled_served(paths, SERVICE)) == 2


def test_labels_that_all_join_once_say_nothing(paths: StatePaths) -> None:
    from rankflow.serving.labels import load_labels, match_labels

    log(paths, *request("r1", DAY, DAY, [1, 2]))
    write_labels(paths, SERVICE, _labels("r1", [1, 2]), "day")
    served_log, _ = served_rows(paths, SERVICE, MonitoringConfig())
    match = match_labels(served_log.frame, load_labels(paths, SERVICE)[0])
    assert len(match.frame) == 2 and match.notes() == []
