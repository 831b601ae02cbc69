"""Point in time: which feature views a request would be served values from its future (the
online store holds only the latest row), and the 422 that names them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rankflow.serving.lookup import PointInTimeError, point_in_time_error, stamped_after

DAY = datetime(2026, 3, 11, tzinfo=UTC)
VIEWS = {
    "user_ctr_28d": "user_daily_stats",
    "user_ctr_7d": "user_daily_stats",
    "item_ctr_28d": "item_daily_stats",
    "user_segment": "user_attributes",
    "log_position": "request_features",
}


def _stamps(item: datetime | None) -> dict[str, list[datetime | None]]:
    return {
        "user_ctr_28d": [DAY, DAY],
        "user_ctr_7d": [DAY, DAY],
        "item_ctr_28d": [DAY - timedelta(days=1), item],
        "user_segment": [DAY - timedelta(days=30)] * 2,
        "log_position": [None, None],  # on-demand outputs carry no timestamp
    }


def test_values_stamped_at_or_before_the_time_are_servable() -> None:
    assert stamped_after(_stamps(None), VIEWS, DAY) == {}
    assert stamped_after(_stamps(DAY), VIEWS, DAY + timedelta(hours=18)) == {}


def test_each_view_with_a_value_from_after_the_time_is_named_with_its_newest_stamp() -> None:
    late = stamped_after(_stamps(DAY + timedelta(hours=1)), VIEWS, DAY - timedelta(seconds=1))
    assert late == {"user_daily_stats": DAY, "item_daily_stats": DAY + timedelta(hours=1)}


def test_one_item_newer_than_the_time_is_enough() -> None:
    late = stamped_after(_stamps(DAY + timedelta(hours=1)), VIEWS, DAY + timedelta(minutes=30))
    assert late == {"item_daily_stats": DAY + timedelta(hours=1)}


def test_the_error_names_the_views_their_stamps_and_what_time_would_do() -> None:
    error = point_in_time_error(
        DAY - timedelta(hours=5), {"user_daily_stats": DAY, "item_daily_stats": DAY}
    )
    assert isinstance(error, PointInTimeError)
    text = str(error)
    assert text.startswith("time: 2026-03-10T19:00:00Z is before")
    assert "'item_daily_stats' (stamped 2026-03-11T00:00:00Z)" in text
    assert "'user_daily_stats' (stamped 2026-03-11T00:00:00Z)" in text
    assert "cannot answer that time" in text and "at or after 2026-03-11T00:00:00Z" in text
