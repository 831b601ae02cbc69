"""The /score request model and the canary arm choice (no service needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rankflow.serving.holder import canary_bucket
from rankflow.serving.schemas import score_request_model

Request = score_request_model(5)


def _errors(body: dict) -> str:
    with pytest.raises(ValidationError) as info:
        Request.model_validate(body)
    return " ".join(".".join(map(str, e["loc"])) for e in info.value.errors())


def test_a_good_request_and_its_time() -> None:
    request = Request.model_validate(
        {"user_id": 3, "item_ids": [1, 2], "device": "mobile", "time": "2026-03-11T10:00:00"}
    )
    assert request.request_time() == datetime(2026, 3, 11, 10, tzinfo=UTC)  # naive = UTC
    later = Request.model_validate({"user_id": 3, "item_ids": [1], "device": "m"})
    assert later.request_time().tzinfo is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "3", "item_ids": [1], "device": "m"}, "user_id"),
        ({"user_id": 3, "item_ids": [1.0], "device": "m"}, "item_ids.0"),
        ({"user_id": 3, "item_ids": list(range(6)), "device": "m"}, "item_ids"),
        ({"user_id": 3, "item_ids": [], "device": "m"}, "item_ids"),
        ({"user_id": 3, "item_ids": [1], "device": "m", "extra": 1}, "extra"),
        ({"user_id": 3, "item_ids": [1], "device": "m", "positions": [0]}, "positions.0"),
        ({"user_id": 2**63, "item_ids": [1], "device": "m"}, "user_id"),
    ],
)
def test_bad_fields_are_named(body: dict, field: str) -> None:
    assert field in _errors(body)


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00+05:00",  # year 0 in UTC: converting it overflowed
        "9999-12-31T23:59:59-05:00",  # year 10000 in UTC
        "9999-12-31T23:59:59Z",  # past what pandas (the gap check) can read
        "1969-12-31T23:59:59Z",
        "2262-01-01T00:00:00Z",
    ],
)
def test_a_time_outside_the_accepted_range_is_refused_naming_the_range(time: str) -> None:
    with pytest.raises(ValidationError) as info:
        Request.model_validate({"user_id": 3, "item_ids": [1], "device": "m", "time": time})
    (error,) = info.value.errors()
    assert error["loc"] == ("time",)
    assert "1970-01-01T00:00:00Z .. 2261-12-31T23:59:59Z" in error["msg"]


@pytest.mark.parametrize(
    ("time", "utc"),
    [
        ("1970-01-01T05:00:00+05:00", datetime(1970, 1, 1, tzinfo=UTC)),
        ("2261-12-31T18:59:59-05:00", datetime(2261, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-03-11T20:30:00+02:00", datetime(2026, 3, 11, 18, 30, tzinfo=UTC)),
    ],
)
def test_the_bounds_are_inclusive_and_offsets_are_converted(time: str, utc: datetime) -> None:
    body = {"user_id": 3, "item_ids": [1], "device": "m", "time": time}
    assert Request.model_validate(body).request_time() == utc


def test_the_limit_is_bounded_by_the_hard_ceiling() -> None:
    with pytest.raises(ValueError, match="max_candidates"):
        score_request_model(100_000)


def test_canary_bucket_is_stable_and_uniform() -> None:
    assert canary_bucket(42) == canary_bucket(42)
    buckets = [canary_bucket(u) for u in range(20_000)]
    assert all(0 <= b < 1 for b in buckets)
    share = sum(b < 0.1 for b in buckets) / len(buckets)
    assert 0.09 < share < 0.11
    # Pinned: the same user gets the same arm in every process and version of Python.
    assert round(canary_bucket(1), 6) == 0.824761
