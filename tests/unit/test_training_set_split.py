"""SplitConfig validation and the calendar-day split plan (no Feast involved)."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from rankflow.features.training_set import DateWindow, SplitConfig, TrainingSetError, plan_split


def test_defaults_and_unknown_keys() -> None:
    config = SplitConfig()
    assert (config.valid_days, config.test_days, config.start_date, config.end_date) == (
        3,
        3,
        None,
        None,
    )
    with pytest.raises(ValidationError, match="test_dayz"):
        SplitConfig.model_validate({"test_dayz": 2})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"valid_days": 0}, "valid_days"),
        ({"test_days": -1}, "test_days"),
        ({"start_date": "2024-03-05", "end_date": "2024-03-01"}, "after end_date"),
    ],
)
def test_invalid_configs_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SplitConfig.model_validate(values)


def test_plan_puts_test_last_and_valid_right_before_it() -> None:
    window = DateWindow(date(2024, 2, 26), date(2024, 3, 6))  # 10 days, across 29 February
    plan = plan_split(window, SplitConfig(valid_days=2, test_days=3))
    assert plan["test"] == DateWindow(date(2024, 3, 4), date(2024, 3, 6))
    assert plan["valid"] == DateWindow(date(2024, 3, 2), date(2024, 3, 3))
    assert plan["train"] == DateWindow(date(2024, 2, 26), date(2024, 3, 1))
    # Contiguous, ordered, covering the window exactly.
    assert sum(part.days for part in plan.values()) == window.days
    assert plan["train"].end < plan["valid"].start <= plan["valid"].end < plan["test"].start


def test_plan_needs_a_day_of_training() -> None:
    window = DateWindow(date(2024, 3, 1), date(2024, 3, 6))
    assert plan_split(window, SplitConfig(valid_days=2, test_days=3))["train"].days == 1
    with pytest.raises(TrainingSetError, match=r"2024-03-01\.\.2024-03-06 has 6 day\(s\)"):
        plan_split(window, SplitConfig(valid_days=3, test_days=3))


def test_the_canarys_fresh_window_keeps_the_last_days_of_the_configured_window() -> None:
    from rankflow.features.training_set import _window

    data = DateWindow(date(2026, 3, 1), date(2026, 3, 30))
    assert _window(SplitConfig(), data, None) == data
    assert _window(SplitConfig(), data, 14) == DateWindow(date(2026, 3, 17), date(2026, 3, 30))
    ended = SplitConfig(end_date=date(2026, 3, 20))
    assert _window(ended, data, 5) == DateWindow(date(2026, 3, 16), date(2026, 3, 20))
    # Never earlier than the configured start: a longer window than the data is the data.
    assert _window(SplitConfig(), data, 90) == data
