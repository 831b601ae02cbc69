"""The soak's pure parts: the day's config (window, drift), the /metrics parsing and the
invariants' verdicts on given rows. The soak itself runs in tests/e2e/test_soak.py."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from rankflow.config import parse_config
from rankflow.sim.soak import SoakPlan, soak_config
from rankflow.sim.soak_faults import LogAccount
from rankflow.sim.soak_report import DayRow, SoakReport
from rankflow.sim.soak_service import parse_log_counters
from rankflow.sim.soak_traffic import TrafficTally, _past_copy, _unknown_copy

FIRST_SERVED = date(2026, 3, 11)
BASE = parse_config(
    {"simulation": {"days": 10, "n_impressions": 30000, "end_date": str(FIRST_SERVED)}}
)


def test_the_window_grows_a_day_a_day_with_the_same_impressions_a_day() -> None:
    plan = SoakPlan(days=5, drift_from=5)
    for day in (1, 3, 6):
        sim = soak_config(BASE, FIRST_SERVED, plan, day).simulation
        assert sim.resolved_end_date() == date(2026, 3, 10 + day)
        assert sim.resolved_start_date() == date(2026, 3, 1)
        assert sim.n_impressions / sim.days == 3000


def test_drift_enters_the_build_only_once_its_first_served_day_is_data() -> None:
    plan = SoakPlan(days=5, drift_from=5)
    assert soak_config(BASE, FIRST_SERVED, plan, 5).simulation.drift_day is None
    sim = soak_config(BASE, FIRST_SERVED, plan, 6).simulation
    assert sim.drift_day == 14  # 2026-03-15, the fifth served day, from 2026-03-01
    assert sim.drift_strength == 1.0 and sim.drift_user_share == 1.0
    assert (
        soak_config(BASE, FIRST_SERVED, SoakPlan(drift_from=None), 9).simulation.drift_day is None
    )


def test_log_counters_are_read_from_the_prometheus_text() -> None:
    text = (
        'rankflow_log_rows_total{outcome="written"} 120.0\n'
        'rankflow_log_rows_total{outcome="dropped"} 3.0\n'
        "rankflow_log_buffer_rows 7.0\n"
        "rankflow_log_flush_errors_total 1.0\n"
    )
    counters = parse_log_counters(text)
    assert (counters.written, counters.dropped, counters.buffered, counters.flush_errors) == (
        120,
        3,
        7,
        1,
    )


def test_the_extras_keep_the_body_and_change_what_they_say() -> None:
    body = {
        "request_id": "r-1",
        "user_id": 5,
        "item_ids": [1, 2],
        "positions": [1, 2],
        "device": "mobile",
        "time": "2026-03-11T10:00:00+00:00",
    }
    past = _past_copy(body, 2)
    assert past["time"].startswith("2026-03-09T10:00") and past["request_id"] == "r-1-past"
    unknown = _unknown_copy(body, 4)
    assert unknown["user_id"] > 10**9 and unknown["item_ids"][:2] == [1, 2]
    assert len(unknown["item_ids"]) == len(unknown["positions"]) == 3


def _row(day: int, verdict: str, checks: dict[str, str], *, drifted: bool = False) -> DayRow:
    row = DayRow(day, f"2026-03-{10 + day}", None, drifted=drifted, verdict=verdict, checks=checks)
    row.traffic = TrafficTally(acknowledged_rows=100, latencies=[0.01])
    row.log = LogAccount(written=100)
    row.on_disk, row.rss_mb = 100, 500.0
    return row


def _verdicts(rows: list[DayRow], tmp_path: Path) -> dict[str, bool]:
    report = SoakReport(len(rows), 3, tmp_path / "service.log")
    for row in rows:
        report.add(row)
    report.finish()
    return {i.name: i.passed for i in report.invariants}


def test_a_skew_fail_is_a_false_fail_and_does_not_count_as_the_drift_caught(
    tmp_path: Path,
) -> None:
    rows = [
        _row(1, "pass", {"feature_skew": "pass"}),
        _row(2, "fail", {"feature_skew": "fail"}),
        _row(3, "fail", {"feature_skew": "fail", "metric_gap": "warn"}, drifted=True),
    ]
    verdicts = _verdicts(rows, tmp_path)
    assert verdicts["no FAIL before the drift"] is False
    assert verdicts["drift caught on its first served day"] is False
    assert verdicts["every acknowledged row logged or counted"] is True


def test_rows_lost_without_a_kill_fail_the_accounting(tmp_path: Path) -> None:
    rows = [_row(1, "pass", {}), _row(2, "pass", {}), _row(3, "fail", {"metric_gap": "fail"})]
    rows[1].on_disk = 90
    rows[2].drifted = True
    verdicts = _verdicts(rows, tmp_path)
    assert verdicts["every acknowledged row logged or counted"] is False
    assert verdicts["drift caught on its first served day"] is True
    assert verdicts["service RSS steady"] is True
