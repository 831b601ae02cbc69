"""The soak of the daily schedule, small (what ``make soak`` runs at 14 days): five simulated days
on a copy of the session's built state, through ``rankflow serve`` in its own process, with the
production-shaped traffic and one scheduled fault a day (kill -9, the log folder removed, the
champion alias deleted), drift on the last day. Every invariant the soak checks is asserted
here, with real dbt, Feast, MLflow, the service and the canary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankflow.paths import REPO_ROOT

# Hang detector, not a speed test: five daily builds and gap checks and a canary.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

DAYS = 5
FAULTS = {2: "kill", 3: "remove_logs", 4: "registry"}
# A truth where who-likes-which-category matters, as the canary's end-to-end test has it
# (tests/e2e/test_canary.py), so that the drift hurts the champion; ten days, grown by the soak.
SIMULATION = {
    "n_users": 800,
    "n_items": 200,
    "n_impressions": 40000,
    "days": 10,
    "end_date": "2026-03-11",
    "segment_category_strength": 2.0,
    "latent_strength": 1.5,
    "user_activity_sigma": 0.3,
    "user_bias_std": 0.1,
    # No user in their first days: this small world's days are noisy enough without them.
    # Same-day signups are compared as served by the skew checks, and the default `make soak`
    # sends them (docs/benchmarks.md, "Soak of the daily schedule").
    "new_user_traffic_share": 0.0,
}
GATES = {
    "min_auc": 0.55,
    "max_ne": 1.0,
    "max_ece": 0.1,
    "calibration_ratio": [0.5, 2.0],
    "min_auc_lift_over_baseline": None,
}
# Ten days of data: the 28-day counters still grow through the training window (real
# covariate drift, as in tests/e2e/test_online.py), so the drift check's thresholds are opened;
# a day of ~4,000 impressions (~200 clicks) judges the metric gap loosely too: the drift drops
# the champion's online AUC by about 0.25, far beyond these.
LOOSE = {
    "psi": {"warn": 20, "fail": 50},
    "ks": {"warn": 0.95, "fail": 0.99},
    "adversarial_auc_lift": {"warn": 0.6, "fail": 0.7},
    "auc_drop": {"warn": 0.05, "fail": 0.1},
    "logloss_rise": {"warn": 0.05, "fail": 0.1},
    "calibration_error": {"warn": 0.3, "fail": 0.5},
    "min_labelled_rows": 200,
    "drift_rows": 1500,
}
CANARY = {
    "window_days": 6,
    "traffic_impressions": 20000,
    "looks": 4,
    "top_k": 2,
    "measure_warm_start": False,
}


def soak_config(folder: Path):
    from rankflow.config import parse_config

    model = yaml.safe_load((REPO_ROOT / "configs" / "model.yaml").read_text())
    model["training"].update({"max_epochs": 2, "progress": False})
    (folder / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    return parse_config(
        {
            "simulation": SIMULATION,
            "training_set": {"valid_days": 2, "test_days": 2},
            "registry": {"gates": GATES},
            "monitoring": LOOSE,
            "serving": {"log": {"flush_seconds": 0.3}, "alias_poll_seconds": 0.5},
            "canary": CANARY,
            "model_config_path": str(folder / "model.yaml"),
        }
    )


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from rankflow.settings import Settings
    from rankflow.sim.soak import SoakPlan, run_soak
    from rankflow.sim.soak_main import build_base, copy_state

    folder = tmp_path_factory.mktemp("soak")
    config = soak_config(folder)
    home = copy_state(build_base(folder / "base", config), folder / "home")
    plan = SoakPlan(days=DAYS, drift_from=DAYS, canary_every=7, faults=FAULTS, seed=3)
    report = run_soak(Settings.resolve(home=home), config, plan)
    (record,) = (home / "soak").glob("soak-*.json")
    return {"report": report, "record": json.loads(record.read_text()), "home": home}


def _invariant(soak: dict[str, Any], name: str) -> str:
    (found,) = [i for i in soak["report"].invariants if i.name == name]
    assert found.passed, found.line()
    return found.detail


def test_every_day_ran_to_the_end_with_no_traceback(soak: dict[str, Any]) -> None:
    _invariant(soak, "no traceback")
    assert [row["day"] for row in soak["record"]["rows"]] == list(range(1, DAYS + 1))
    assert all(row["verdict"] in ("pass", "warn", "fail") for row in soak["record"]["rows"])


def test_every_request_was_answered_and_the_extras_were_sent(soak: dict[str, Any]) -> None:
    _invariant(soak, "no request failed")
    traffic = [row["traffic"] for row in soak["record"]["rows"]]
    assert sum(t["retries"] for t in traffic) > 0
    assert sum(t["past_time_sent"] for t in traffic) > 0
    assert sum(t["past_time_refused"] for t in traffic) == sum(t["past_time_sent"] for t in traffic)
    assert sum(t["unknown_sent"] for t in traffic) > 0
    assert sum(t["unlabelled"] for t in traffic) > 0


def test_no_false_fail_before_the_drift_and_the_drift_caught_on_its_first_day(
    soak: dict[str, Any],
) -> None:
    _invariant(soak, "no FAIL before the drift")
    _invariant(soak, "drift caught on its first served day")
    last = soak["record"]["rows"][-1]
    assert last["drifted_traffic"] is True
    assert not any(row["drifted_traffic"] for row in soak["record"]["rows"][:-1])


def test_every_acknowledged_row_is_logged_or_counted(soak: dict[str, Any]) -> None:
    _invariant(soak, "every acknowledged row logged or counted")
    rows = {row["day"]: row for row in soak["record"]["rows"]}
    for day, row in rows.items():
        if day not in FAULTS:
            assert row["lost"] == 0, row
    assert rows[3]["log"]["removed_on_disk"] > 0  # the removed folder held the morning's rows
    assert rows[2]["log"]["unflushed_at_kill"] >= rows[2]["lost"] >= 0


def test_the_service_memory_stays_within_ten_percent(soak: dict[str, Any]) -> None:
    _invariant(soak, "service RSS steady")


def test_the_failing_gap_check_started_a_canary_and_the_alias_came_back(
    soak: dict[str, Any],
) -> None:
    rows = soak["record"]["rows"]
    canary = rows[-1]["canary"]
    assert canary is not None and canary["why"].startswith("gap check failed on")
    assert canary["decision"]
    notes = " ".join(rows[3]["log"]["notes"])
    assert "@champion" in notes and "restored" in notes
    assert Path(soak["home"] / "logs" / "soak-archive").is_dir()
