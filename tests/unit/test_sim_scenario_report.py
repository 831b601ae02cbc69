"""The drift scenario's pure parts: the report (each stage says what it cost, the summary adds
them up) and the failure cases' model configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.sim.scenario import ScenarioReport, Stage


def test_each_stage_is_timed_from_the_previous_one_and_the_summary_totals_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 130.0, 175.0])
    monkeypatch.setattr("rankflow.sim.scenario.time.monotonic", lambda: next(clock))
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


def test_the_candidate_blind_config_keeps_nothing_that_tells_candidates_apart(
    tmp_path: Path,
) -> None:
    """The "passes offline, worse online" challenger: every feature left is the same for all
    candidates of one request (user, context, position), and the config is still valid."""
    import yaml

    from models.config import load_model_config
    from rankflow.config import parse_config
    from rankflow.sim.scenario import candidate_blind_model_config

    config = parse_config({})
    written = candidate_blind_model_config(config, tmp_path)
    features = yaml.safe_load(written.read_text())["features"]
    kept = [*features["categorical"], *features["numeric"]]
    crossed = [f for cross in features["crosses"] for f in cross["features"]]
    per_candidate = ("item_", "category", "uc_")
    assert not [f for f in [*kept, *crossed] if f.startswith(per_candidate)]
    assert {"position", "device", "user_segment", "user_ctr_28d"} <= set(kept)
    original = yaml.safe_load(config.resolved_model_config_path().read_text())["features"]
    assert any(f.startswith(per_candidate) for f in original["numeric"])  # something was dropped
    load_model_config(written)  # a valid model config (raises if not)
