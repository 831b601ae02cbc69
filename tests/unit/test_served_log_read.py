"""The served log read as production writes it: client retries that reuse a request id, far
dates the service accepted, and half-written files are kept once, skipped or named, never a
traceback. Files are written here in the layout the service writes (Feast's logging schema in
``features/`` under random names, the score table in ``scores/`` under time-prefixed names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from rankflow.paths import StatePaths
from rankflow.serving.labels import LABEL_COLUMNS, labels_dir, load_labels, write_labels
from rankflow.serving.served_log import (
    LOG_TIMESTAMP,
    REQUEST_ID,
    load_served_log,
    read_served_log,
    score_log_dir,
)
from tests.fixtures.served_log_files import DAY, SERVICE, log, request, truncate


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path)


# ------------------------------------------------------------------------------ retries
@pytest.mark.parametrize("explicit_time", [True, False], ids=["same-time", "own-time"])
def test_a_retry_that_reuses_the_request_id_is_kept_once_and_counted(
    paths: StatePaths, explicit_time: bool
) -> None:
    """A client retry logs the same (``__request_id``, item) again, with the request's
    explicit time or with its own. The first one logged is kept, whatever order the random
    feature-file names list in; the repeats are counted."""
    first_at = DAY + timedelta(seconds=1)
    retry_at = first_at + timedelta(seconds=2)
    retry_when = DAY if explicit_time else retry_at
    log(paths, *request("r1", DAY, first_at, [1, 2, 3], p_click=0.1), name="f")
    log(paths, *request("r2", DAY, first_at, [1, 2], p_click=0.3), name="e")
    log(paths, *request("r1", retry_when, retry_at, [1, 2, 3], p_click=0.2), name="0")

    served = load_served_log(paths, SERVICE)

    frame = served.frame
    assert len(frame) == 5
    assert not frame.duplicated([REQUEST_ID, "item_id"]).any()
    first = frame[frame[REQUEST_ID] == "r1"]
    assert first["p_click"].tolist() == [0.1, 0.1, 0.1]  # the first logged, not the retry
    assert (first[LOG_TIMESTAMP] == pd.Timestamp(DAY)).all()
    assert served.duplicate_rows == 3 and served.duplicate_requests == 1
    assert any("3 rows" in n and "__request_id" in n and "r1" in n for n in served.notes())
    assert read_served_log(paths, SERVICE).equals(frame)  # the plain reader agrees


def test_a_log_without_retries_has_no_notes(paths: StatePaths) -> None:
    log(paths, *request("r1", DAY, DAY, [1, 2]))
    served = load_served_log(paths, SERVICE)
    assert len(served.frame) == 2 and served.notes() == [] and served.skipped_rows == 0


# ---------------------------------------------------------------------------- far dates
@pytest.mark.parametrize(
    "far",
    [datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)],
    ids=["9999-12-31", "0001-01-01"],
)
def test_rows_with_a_far_date_are_skipped_counted_and_named(
    paths: StatePaths, far: datetime
) -> None:
    """The service accepted a request ``time`` that Parquet and Arrow hold (microseconds) but
    pandas' nanosecond timestamps, which Feast's point-in-time join converts the entity rows'
    times to, do not: those rows are skipped and named, the rest still reach the join."""
    log(paths, *request("ok", DAY, DAY, [1, 2]))
    log(paths, *request("far", far, DAY, [1, 2, 3]))

    served = load_served_log(paths, SERVICE)

    # What Feast's point-in-time join does to the entity rows' times, which the gap check
    # hands it as objects (rankflow.monitoring.report._offline).
    entity_times = pd.Series(served.frame[LOG_TIMESTAMP].to_numpy(dtype=object))
    pd.to_datetime(entity_times.infer_objects(), utc=True)
    assert served.frame[REQUEST_ID].tolist() == ["ok", "ok"]
    assert served.skipped_rows == 3
    [skip] = served.out_of_range
    assert (skip.column, skip.rows, skip.key, skip.examples) == (
        LOG_TIMESTAMP,
        3,
        REQUEST_ID,
        ["far"],
    )
    note = " ".join(served.notes())
    assert LOG_TIMESTAMP in note and "far" in note
    assert f"{far.year:04d}-{far.month:02d}-{far.day:02d}" in note  # the value found
    assert "1677-09-21" in note and "2262-04-11" in note  # what was expected


# ------------------------------------------------------------------------ unreadable files
@pytest.mark.parametrize("folder", ["features", "scores"])
def test_a_half_written_file_is_skipped_and_named_the_others_are_read(
    paths: StatePaths, folder: str
) -> None:
    """Feast writes feature files in place, so a reader can meet one half written (or empty,
    just created); the file is named with the error and the other files are still read."""
    log(paths, *request("r1", DAY, DAY, [1, 2]))
    feature_file = log(paths, *request("r2", DAY, DAY + timedelta(seconds=1), [1, 2]))
    score_file = sorted(score_log_dir(paths, SERVICE).glob("*.parquet"))[-1]
    broken = feature_file if folder == "features" else score_file
    truncate(broken)
    empty = broken.parent / "00-just-created.parquet"
    empty.write_bytes(b"")

    served = load_served_log(paths, SERVICE)

    assert served.frame[REQUEST_ID].tolist() == ["r1", "r1"]
    assert sorted(u.path for u in served.unreadable) == sorted([broken, empty])
    note = " ".join(served.notes())
    assert str(broken) in note and str(empty) in note and "2 unreadable" in note


def test_only_unreadable_files_read_as_an_empty_log_that_names_them(paths: StatePaths) -> None:
    feature_file = log(paths, *request("r1", DAY, DAY, [1, 2]))
    truncate(feature_file)
    served = load_served_log(paths, SERVICE)
    assert served.frame.empty
    assert [u.path for u in served.unreadable] == [feature_file]


def test_a_half_written_labels_file_is_named_and_the_others_are_read(paths: StatePaths) -> None:
    labels = pd.DataFrame(
        {"__request_id": ["r1"], "item_id": [1], "position": [1], "label": [1], "p_true": [0.2]}
    )
    write_labels(paths, SERVICE, labels.assign(mode="log"), "day-1")
    broken = write_labels(paths, SERVICE, labels.assign(mode="log"), "day-2")
    truncate(broken)

    frame, unreadable = load_labels(paths, SERVICE)

    assert frame["__request_id"].tolist() == ["r1"]
    assert [u.path for u in unreadable] == [broken]
    assert list(load_labels(StatePaths(paths.root / "none"), SERVICE)[0].columns) == list(
        LABEL_COLUMNS
    )
    assert labels_dir(paths, SERVICE) == broken.parent
