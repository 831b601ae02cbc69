"""The drift check compares served rows with a comparable reference (the days before the
served day, the same hours, looked up as served), fails drift-free data at most at its declared rate, and
says which features moved, by how much against which threshold, and what to do."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from rankflow.monitoring.config import MonitoringConfig, Threshold
from rankflow.monitoring.drift import (
    as_served,
    describe_reference,
    drift,
    features_drift,
    reference_entities,
    reference_window,
    served_hours,
    served_span,
)
from rankflow.monitoring.stats import psi

ZERO = Threshold(warn=0.0, fail=0.0)


def test_the_reference_is_the_days_just_before_the_served_day_whatever_the_champion_age() -> None:
    # A champion trained months ago: still the week before the served day.
    assert reference_window(
        "days_before_served",
        7,
        date(2026, 12, 6),
        served_from=date(2026, 12, 6),
        training_window="2026-08-01..2026-08-30",
    ) == (date(2026, 11, 29), date(2026, 12, 5))
    # The warehouse does not reach the served day's eve yet: its last days.
    assert reference_window(
        "days_before_served", 7, date(2026, 12, 2), served_from=date(2026, 12, 6)
    ) == (date(2026, 11, 26), date(2026, 12, 2))
    # Nothing served to date it by: the last days of the data.
    assert reference_window("days_before_served", 3, date(2026, 11, 30)) == (
        date(2026, 11, 28),
        date(2026, 11, 30),
    )


def test_the_training_window_reference_is_the_last_days_of_that_window() -> None:
    mode = "training_window"
    served = date(2026, 12, 1)
    assert reference_window(
        mode, 7, date(2026, 11, 30), served_from=served, training_window="2026-10-02..2026-10-31"
    ) == (date(2026, 10, 25), date(2026, 10, 31))
    # A window shorter than the reference: all of it.
    assert reference_window(
        mode, 7, date(2026, 11, 30), training_window="2026-10-29..2026-10-31"
    ) == (date(2026, 10, 29), date(2026, 10, 31))
    # No window recorded: the last days of the data.
    assert reference_window(mode, 3, date(2026, 11, 30)) == (
        date(2026, 11, 28),
        date(2026, 11, 30),
    )


def test_a_few_rows_with_an_old_explicit_time_move_neither_the_served_day_nor_its_hours() -> None:
    afternoon = pd.date_range("2026-12-06 12:00", "2026-12-06 23:50", periods=400, tz="UTC")
    stamps = pd.Series([pd.Timestamp("2026-12-04 03:00", tz="UTC"), *afternoon])
    span = served_span(stamps)
    assert span is not None and span[0].date() == date(2026, 12, 6)
    assert served_hours(stamps) == tuple(range(12, 24))
    assert served_span(stamps.iloc[:0]) is None


def test_28_day_counters_of_the_window_start_are_not_comparable_with_a_served_day() -> None:
    """A counter over the last 28 days grows through the first 28 days of the data: the whole
    window is a different population from a served day, its last week is not."""
    rng = np.random.default_rng(0)
    days = pd.date_range("2026-10-01", periods=35, freq="D", tz="UTC")
    rate = rng.gamma(2.0, 5.0, (len(days), 400))  # impressions a day of 400 items
    counts = np.array([rate[max(0, d - 28) : d].sum(axis=0) for d in range(1, len(days) + 1)])
    frame = pd.DataFrame({"day": np.repeat(days.date, 400), "impressions_28d": counts.ravel()})
    served = frame[frame["day"] == days[-1].date()]["impressions_28d"]
    window = frame[frame["day"] < days[-1].date()]
    start, end = reference_window(
        "days_before_served", 7, days[-2].date(), served_from=days[-1].date()
    )
    last_week = window[(window["day"] >= start) & (window["day"] <= end)]["impressions_28d"]
    assert psi(window["impressions_28d"], served) > 0.25
    assert psi(last_week, served) < 0.1


def test_reference_rows_are_looked_up_as_served_at_the_start_of_their_day() -> None:
    impressions = pd.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "event_timestamp": pd.to_datetime(
                ["2026-10-24 15:30:00", "2026-10-30 23:59:59", "2026-10-31 00:10:00"], utc=True
            ),
            "user_id": [1, 2, 3],
            "hour_of_day": [15, 23, 0],
            "label": [0, 1, 0],
        }
    )
    entity = reference_entities(impressions, (date(2026, 10, 24), date(2026, 10, 30)), 10, 0)
    assert sorted(entity["user_id"]) == [1, 2]  # the window's days only
    assert "label" not in entity and "event_id" not in entity
    stamps = sorted(entity["event_timestamp"])
    assert stamps == list(pd.to_datetime(["2026-10-24 00:00:01", "2026-10-30 00:00:01"], utc=True))
    assert sorted(entity["hour_of_day"]) == [15, 23]  # the request's own hour is kept
    assert as_served(impressions)["user_id"].tolist() == [1, 2, 3]


def test_a_log_of_part_of_a_day_is_compared_with_the_same_hours() -> None:
    def log(first: str, last: str) -> pd.Series:
        """A thousand requests spread from ``first`` to ``last``."""
        return pd.Series(pd.date_range(first, last, periods=1_000, tz="UTC"))

    assert served_hours(log("2026-12-06 12:05", "2026-12-06 23:59")) == tuple(range(12, 24))
    assert served_hours(log("2026-12-06 22:30", "2026-12-07 01:10")) == (22, 23, 0, 1)
    # A whole day (or more), however its traffic is spread over the hours: every hour.
    assert served_hours(log("2026-12-06 00:00", "2026-12-06 23:59")) is None
    assert served_hours(log("2026-12-05 18:00", "2026-12-06 19:00")) is None
    assert served_hours(pd.Series([], dtype="datetime64[ns, UTC]")) is None

    day = pd.date_range("2026-10-30", periods=48, freq="30min", tz="UTC")
    impressions = pd.DataFrame({"event_timestamp": day, "user_id": np.arange(48)})
    window = (date(2026, 10, 30), date(2026, 10, 30))
    entity = reference_entities(impressions, window, 100, 0, hours=(12, 13))
    assert sorted(entity["user_id"]) == [24, 25, 26, 27]
    assert describe_reference("days_before_served", window, (22, 23, 0)).endswith(
        "UTC hours 22-00 only, as the served log covers"
    )


def test_time_of_day_features_of_half_a_day_drift_from_a_whole_day_but_not_from_its_hours() -> None:
    """A log folder removed at noon leaves the afternoon: against whole days its hour features
    fail, against the same hours of those days they pass."""
    rng = np.random.default_rng(3)
    cfg = MonitoringConfig()

    def rows(hours: np.ndarray) -> pd.DataFrame:
        angle = 2 * np.pi * hours / 24
        return pd.DataFrame(
            {
                "hour_sin": np.sin(angle),
                "hour_cos": np.cos(angle),
                "x": rng.normal(0, 1, len(hours)),
            }
        )

    reference_hours = rng.integers(0, 24, 6_000)
    served = rows(rng.integers(12, 24, 3_000))
    whole = drift(rows(reference_hours), served, ["hour_sin", "hour_cos", "x"], cfg)
    afternoons = rows(reference_hours[reference_hours >= 12])
    same_hours = drift(afternoons, served, ["hour_sin", "hour_cos", "x"], cfg)
    assert whole.verdict == "fail"
    assert same_hours.verdict == "pass"


def _frames(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "normal": rng.normal(shift, 1, n),
            "counts": rng.poisson(4, n).astype(np.float64),
            "sparse": np.where(rng.random(n) < 0.3, np.nan, rng.exponential(1, n)),
            "segment": rng.choice(np.array(["a", "b", "c", None], dtype=object), n),
        }
    )


@pytest.mark.slow
def test_drift_free_windows_fail_the_feature_tests_at_most_at_the_declared_rate() -> None:
    """With zero configured thresholds only the sampling guard decides; the declared rate is
    shared by every test (Bonferroni), so the whole set fails at most at that rate."""
    cfg = MonitoringConfig(psi=ZERO, ks=ZERO, drift_false_alarm_rate=0.05)
    seeds, fails = 200, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        results = features_drift(_frames(rng, 400), _frames(rng, 250), list(_frames(rng, 1)), cfg)
        fails += any(r.verdict == "fail" for r in results.values())
    assert fails / seeds <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / seeds), f"{fails} of {seeds}"


def test_a_known_shift_fails_the_feature_it_moved() -> None:
    rng = np.random.default_rng(1)
    cfg = MonitoringConfig()
    results = features_drift(_frames(rng, 3000), _frames(rng, 3000, shift=0.8), ["normal"], cfg)
    assert results["normal"].verdict == "fail"
    assert results["normal"].psi > cfg.psi.fail
    calm = features_drift(_frames(rng, 3000), _frames(rng, 3000), ["normal", "segment"], cfg)
    assert {r.verdict for r in calm.values()} == {"pass"}


def test_the_sampling_guard_binds_on_small_samples_only() -> None:
    """The null quantile is simulated only where it can exceed the configured threshold; at
    thousands of rows the configured one decides."""
    rng = np.random.default_rng(4)
    cfg = MonitoringConfig()
    large = features_drift(_frames(rng, 5000), _frames(rng, 20_000), ["counts", "segment"], cfg)
    assert {(d.psi_warn, d.psi_fail) for d in large.values()} == {(cfg.psi.warn, cfg.psi.fail)}
    small = features_drift(_frames(rng, 200), _frames(rng, 200), ["normal"], cfg)
    assert small["normal"].psi_warn > cfg.psi.warn  # sampling noise alone reaches the floor


def _head_item_days(rng: np.random.Generator, days: int, rows: int) -> pd.DataFrame:
    """Days of rows whose item counter is mostly spread over many items, but an eighth of the
    rows are one head item's, carrying its value of the day, which moves a little each day."""
    frames = []
    for day in range(days):
        head = rng.random(rows) < 0.125
        counter = np.where(head, 30_000 + rng.normal(0, 300), rng.gamma(2.0, 2_000, rows))
        stamp = pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(days=day, seconds=1)
        frames.append(pd.DataFrame({"item_counter": counter, "event_timestamp": stamp}))
    return pd.concat(frames, ignore_index=True)


def test_a_head_items_daily_jitter_is_judged_against_the_reference_days_own_spread() -> None:
    """Its one value a day falls on either side of a quantile edge of the reference, which
    moves a tenth of the rows between bins and PSI far past any threshold of independent rows;
    the reference's days show the same spread among themselves, so a served day is no drift."""
    cfg = MonitoringConfig()
    fails = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        reference, served = _head_item_days(rng, 7, 700), _head_item_days(rng, 1, 5000)
        result = drift(reference, served, ["item_counter"], cfg)
        fails += result.verdict == "fail"
    assert fails == 0
    moved = _head_item_days(np.random.default_rng(0), 1, 5000)
    moved["item_counter"] *= 1.5  # every item's counter half as high again: drift
    result = drift(_head_item_days(np.random.default_rng(1), 7, 700), moved, ["item_counter"], cfg)
    assert result.verdict == "fail" and "item_counter PSI" in result.summary


def test_too_few_rows_are_not_judged() -> None:
    rng = np.random.default_rng(2)
    result = drift(_frames(rng, 3000), _frames(rng, 50), ["normal"], MonitoringConfig())
    assert result.verdict == "warn"
    assert "not judged" in result.summary and "50 served rows" in result.summary
    assert "serve more traffic" in result.summary
    old = drift(_frames(rng, 20), _frames(rng, 3000), ["normal"], MonitoringConfig(), "the ref")
    assert old.verdict == "warn" and "3,000 served rows against 20 of the ref" in old.summary
    assert "no longer holds" in old.summary and "serve more traffic" not in old.summary


def _day(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Rows of one day; every row of an item carries the item's daily value (a snapshot)."""
    items = rng.integers(0, 300, n)
    frame = _frames(rng, n, shift)
    frame["item_stat"] = rng.normal(0, 1, 300)[items]
    return frame.assign(item_id=items, user_id=rng.integers(0, 20_000, n))


@pytest.mark.slow
def test_drift_free_days_pass_and_a_shift_fails_with_what_moved_and_what_to_do() -> None:
    rng = np.random.default_rng(3)
    reference = pd.concat([_day(rng, 600) for _ in range(5)], ignore_index=True)
    features = ["normal", "counts", "sparse", "segment", "item_stat"]
    calm = drift(reference, _day(rng, 3000), features, MonitoringConfig(), "the last 5 days")
    assert calm.verdict == "pass", calm.line()
    assert "none of 5 features moved" in calm.summary
    assert "held-out users and items" in calm.summary
    moved = drift(
        reference, _day(rng, 3000, shift=0.8), features, MonitoringConfig(), "the last 5 days"
    )
    assert moved.verdict == "fail"
    assert "1 of 5 features moved: normal PSI" in moved.summary
    assert "3,000 served rows against 3,000 of the last 5 days" in moved.summary
    assert "a canary retrains" in moved.summary and "fix the data first" in moved.summary
    assert moved.details["features"]["normal"]["verdict"] == "fail"
    assert moved.details["adversarial"]["held_out_by"] == ["user_id", "item_id"]


def test_a_head_item_that_left_the_traffic_is_named_in_the_summary() -> None:
    rng = np.random.default_rng(5)
    cfg = MonitoringConfig()

    def rows(n: int, head_share: float) -> pd.DataFrame:
        items = np.where(rng.random(n) < head_share, 7, rng.integers(100, 2_000, n))
        return pd.DataFrame(
            {"item_id": items, "user_id": rng.integers(0, 5_000, n), "x": rng.normal(0, 1, n)}
        )

    gone = drift(rows(4_000, 0.08), rows(4_000, 0.0), ["x"], cfg)
    assert "item_id 7 8." in gone.summary and "-> 0.0%" in gone.summary, gone.summary
    assert gone.details["entity_shifts"][0].startswith("item_id 7 ")
    steady = drift(rows(4_000, 0.08), rows(4_000, 0.08), ["x"], cfg)
    assert steady.details["entity_shifts"] == []
