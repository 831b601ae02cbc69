"""The drift scenario's report: each stage says what it cost, the summary adds them up."""

from __future__ import annotations

import pytest

from rankflow.canary.scenario import ScenarioReport, Stage


def test_each_stage_is_timed_from_the_previous_one_and_the_summary_totals_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 130.0, 175.0])
    monkeypatch.setattr("rankflow.canary.scenario.time.monotonic", lambda: next(clock))
    report = ScenarioReport()  # starts the clock at 100
    report.add(Stage("before drift", "served", "v1"))
    report.add(Stage("after drift", "degraded", "v1"))
    assert [s.seconds for s in report.stages] == [30.0, 45.0]
    report.aliases = {"champion": "1"}
    summary = report.summary()
    assert "[before drift] served: v1 (30 s)" in summary
    assert "[after drift] degraded: v1 (45 s)" in summary
    assert summary.endswith("scenario time: 1.2 min")


def test_a_stage_looked_up_by_name_is_the_one_added() -> None:
    report = ScenarioReport()
    added = report.add(Stage("gap check", "fail", "drift fail"))
    assert report.stage("gap check") is added
