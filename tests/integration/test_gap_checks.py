"""The gap checks catch injected faults, naming the feature or version, and pass a clean run.

Each case serves a replayed day (the simulator's next day) through a real in-process
``ScoringService`` on a private copy of the session's built state (real Feast SQLite store and
DuckDB offline store, real MLflow registry), then runs ``run_gap_check`` on what was logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankflow.config import parse_config
from rankflow.monitoring.outcome import GapCheckOutcome
from rankflow.monitoring.report import run_gap_check
from rankflow.serving.labels import write_labels
from rankflow.serving.replay import in_process, log_replay
from rankflow.serving.served_log import score_log_dir
from rankflow.serving.service import ScoringService
from rankflow.settings import Settings
from rankflow.sim.oracle import Oracle

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "ctr_ranker_v1"


def _config(state: dict, enforce_ttl: bool = True) -> Any:
    return parse_config(
        {
            "simulation": state["simulation"],
            "registry": {"gates": state["gates"]},
            "serving": {"log": {"flush_seconds": 0.2}, "enforce_ttl": enforce_ttl},
            "monitoring": {
                "min_labelled_rows": 100,
                "drift_rows": 1500,
                # The 10-day test data's 28-day counts grow through the training window (real
                # drift, shown by the drift check); these tests are about skew, not drift.
                "psi": {"warn": 20, "fail": 50},
                "ks": {"warn": 0.95, "fail": 0.99},
                "adversarial_auc_lift": {"warn": 0.6, "fail": 0.7},
                "auc_drop": {"warn": 0.3, "fail": 0.5},
                "logloss_rise": {"warn": 0.3, "fail": 0.5},
                "calibration_error": {"warn": 2, "fail": 5},
            },
        }
    )


def _serve_day(
    state: dict,
    *,
    fault: Callable[[ScoringService], None] | None = None,
    after: Callable[[Path], None] | None = None,
    day: date | None = None,
    enforce_ttl: bool = True,
) -> GapCheckOutcome:
    # Explicit: an earlier in-process mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI.
    settings = Settings.resolve(home=state["home"], mlflow_tracking_uri=state["tracking_uri"])
    config = _config(state, enforce_ttl)
    service = ScoringService(settings, config.scoring())
    service.start(poll=False)
    if fault is not None:
        fault(service)
    traffic = Oracle.from_truth_dir(settings.paths.truth).day_traffic(day, n_impressions=900)
    try:
        _, labels = log_replay(in_process(service), traffic.frame, traffic.day)
    finally:
        service.close()
    write_labels(settings.paths, SERVICE, labels, "test")
    if after is not None:
        after(settings.paths.root)
    return run_gap_check(settings, config.monitoring, config.scoring(), log_to_mlflow=False)


def _check(outcome: GapCheckOutcome, name: str) -> Any:
    return next(c for c in outcome.checks if c.name == name)


def _wrap_fetch(service: ScoringService, change: Callable[[dict[str, list]], None]) -> None:
    original = service.lookup.fetch

    def fetch(*args: Any, **kwargs: Any) -> Any:
        served = original(*args, **kwargs)
        change(served.values)
        return served

    service.lookup.fetch = fetch  # type: ignore[method-assign]


def test_a_clean_run_passes(online_copy: dict) -> None:
    outcome = _serve_day(online_copy)
    for name in ("feature_skew", "score_skew", "freshness"):
        assert _check(outcome, name).verdict == "pass", _check(outcome, name).line()
    assert outcome.verdict == "pass", outcome.summary()
    assert outcome.model_version == online_copy["champion"]
    assert (outcome.report_dir / "report.md").is_file()
    assert (outcome.report_dir / "summary.json").is_file()
    # What the metric gap judges: served rows joined with their labels, every one scored.
    from models.metrics import auc
    from rankflow.monitoring.report import labelled_served
    from rankflow.paths import StatePaths

    labelled = labelled_served(StatePaths(online_copy["home"]), SERVICE)
    assert set(labelled["arm"]) == {"champion"}
    assert len(labelled) == outcome.context["labelled_rows"]
    assert 0.5 < auc(labelled["label"].to_numpy(), labelled["p_click"].to_numpy()) < 1.0


def test_an_online_transform_that_differs_fails_naming_the_feature(online_copy: dict) -> None:
    def local_time(values: dict[str, list]) -> None:
        # The online on-demand transform uses local time (UTC+1); offline uses UTC.
        angles = [
            math.atan2(s, c) + 2 * math.pi / 24
            for s, c in zip(values["hour_sin"], values["hour_cos"], strict=True)
        ]
        values["hour_sin"] = [math.sin(a) for a in angles]
        values["hour_cos"] = [math.cos(a) for a in angles]

    outcome = _serve_day(online_copy, fault=lambda s: _wrap_fetch(s, local_time))
    skew = _check(outcome, "feature_skew")
    assert skew.verdict == "fail"
    assert "request_features:hour_sin" in skew.summary and "hour_cos" in skew.summary
    assert skew.details["features"]["hour_sin"]["mismatch_rate"] == 1.0
    assert skew.details["features"]["user_ctr_28d"]["mismatch_rate"] == 0.0
    assert outcome.verdict == "fail"


def test_a_feature_served_from_the_wrong_view_fails_naming_it(online_copy: dict) -> None:
    def wrong_view(values: dict[str, list]) -> None:
        values["user_ctr_7d"] = list(values["item_ctr_7d"])

    outcome = _serve_day(online_copy, fault=lambda s: _wrap_fetch(s, wrong_view))
    skew = _check(outcome, "feature_skew")
    assert skew.verdict == "fail"
    assert "user_daily_stats:user_ctr_7d" in skew.summary
    assert skew.details["features"]["item_ctr_7d"]["verdict"] == "pass"


def test_a_stale_materialization_fails_naming_the_view(online_copy: dict) -> None:
    from rankflow.features.store import open_store
    from rankflow.paths import StatePaths

    paths = StatePaths(online_copy["home"])
    table = pq.read_table(paths.exports / "user_daily_features").to_pandas()
    day_before = pd.Timestamp("2026-03-10", tz="UTC")
    stale = table[table["feature_ts"] == day_before]
    assert len(stale) > 50
    # Users who signed up the day before have no row for it: serve their newest row as if it
    # were a day older, so every user's value in the online store is a day stale.
    newest = table[table["feature_ts"] == day_before + pd.Timedelta(days=1)]
    newcomers = newest[~newest["user_id"].isin(stale["user_id"])].copy()
    newcomers["feature_ts"] = day_before
    stale = pd.concat([stale, newcomers], ignore_index=True)
    with open_store(Settings(home=paths.root)) as store:  # the online store goes back a day
        store.write_to_online_store("user_daily_stats", stale.reset_index(drop=True))
    outcome = _serve_day(online_copy)
    skew = _check(outcome, "feature_skew")
    assert skew.verdict == "fail"
    assert "user_daily_stats:" in skew.summary
    assert skew.details["features"]["item_ctr_7d"]["verdict"] == "pass"
    fresh = _check(outcome, "freshness")
    assert fresh.details["views"]["user_daily_stats"]["age_hours"] > 24
    assert fresh.verdict in ("warn", "fail") and "user_daily_stats" in fresh.summary


def test_a_model_version_mismatch_fails_naming_the_version(online_copy: dict) -> None:
    other = online_copy["other"]

    def relabel(root: Path) -> None:
        # The service scored with the champion but logged another version.
        from rankflow.paths import StatePaths

        for file in score_log_dir(StatePaths(root), SERVICE).glob("*.parquet"):
            frame = pq.read_table(file).to_pandas()
            frame["model_version"] = other
            frame.to_parquet(file, index=False)

    outcome = _serve_day(online_copy, after=relabel)
    skew = _check(outcome, "score_skew")
    assert skew.verdict == "fail"
    assert f"v{other}" in skew.summary and "model/transform" in skew.summary
    assert _check(outcome, "feature_skew").verdict == "pass"


@pytest.mark.parametrize("enforce_ttl", [True, False])
def test_values_past_their_ttl_are_removed_or_reported(
    online_copy: dict, enforce_ttl: bool
) -> None:
    """Two days after the as-of time the online store still holds the daily views' last rows,
    which the point-in-time join (TTL one day) no longer returns. With ``serving.enforce_ttl``
    (the default) the service serves them as missing, so there is no skew; without it the
    feature-skew check reports every daily feature. Freshness flags the age either way."""
    outcome = _serve_day(online_copy, day=date(2026, 3, 12), enforce_ttl=enforce_ttl)
    skew = _check(outcome, "feature_skew")
    daily = ("user_ctr_28d", "item_ctr_7d", "uc_ctr_28d")
    if enforce_ttl:
        assert skew.verdict == "pass", skew.line()
    else:
        assert skew.verdict == "fail"
        for feature in daily:
            assert skew.details["features"][feature]["mismatch_rate"] > 0.5, feature
        assert "user_attributes" not in skew.summary  # no TTL: never expires
    fresh = _check(outcome, "freshness")
    assert fresh.details["views"]["user_daily_stats"]["age_hours"] > 24
    assert fresh.verdict in ("warn", "fail")


def test_on_demand_in_process_equals_feasts_augmentation(online_state: dict) -> None:
    """The service's default path (stored views through Feast, the registered on-demand UDF in
    process) serves exactly what Feast's own on-demand augmentation does."""
    from datetime import UTC, datetime

    from rankflow.features.store import open_store
    from rankflow.serving.lookup import OnlineLookup

    n = 60
    rows = {
        "user_id": [5] * n,
        "item_id": list(range(1, n + 1)),
        "category": ["home", "fashion", "", "toys"] * (n // 4),
        "position": [1, 2, 3, 4] * (n // 4),
        "device": ["mobile"] * n,
        "hour_of_day": [13] * n,
    }
    when = datetime(2026, 3, 11, 13, tzinfo=UTC)
    with open_store(Settings(home=online_state["home"])) as store:
        here = OnlineLookup(store, SERVICE, on_demand_in_process=True).fetch(rows, when, n)
        feast = OnlineLookup(store, SERVICE, on_demand_in_process=False).fetch(rows, when, n)
    assert here.values == feast.values
    assert here.statuses == feast.statuses
    assert here.timestamps == feast.timestamps
    assert here.missing == feast.missing
    assert any(v is None for v in here.values["uc_ctr_lift"])  # nulls took the same path


def test_a_same_day_signup_is_compared_as_served_and_a_lost_user_still_fails(
    online_copy: dict,
) -> None:
    """The online store does not hold two groups of users (their attributes served as
    ``NOT_FOUND``). Those of the first signed up during the served day, which the next
    morning's build loads offline: the service could not have had them, so compared as served
    (the values published at the day's start) nothing differs. Those of the second signed up
    long before: the online store lost them, and feature skew fails on exactly their rows."""
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    from rankflow.paths import StatePaths
    from rankflow.serving.served_log import load_served_log

    attributes = ("user_segment", "user_age_bucket", "user_region")

    def hidden(user: int) -> bool:
        return user % 5 == 0

    def signed_up_today(user: int) -> bool:
        return user % 10 == 0

    def unknown_online(service: ScoringService) -> None:
        original = service.lookup.fetch

        def fetch(rows: Any, *args: Any, **kwargs: Any) -> Any:
            served = original(rows, *args, **kwargs)
            for position, user in enumerate(rows["user_id"]):
                if hidden(int(user)):
                    for name in attributes:
                        served.values[name][position] = None
                        served.statuses[name][position] = FieldStatus.NOT_FOUND
                        served.timestamps[name][position] = None
            return served

        service.lookup.fetch = fetch  # type: ignore[method-assign]

    def load_todays_signups(root: Path) -> None:
        """The next morning's build: the first group's signups are on the served day, a
        minute before each one's first request."""
        paths = StatePaths(root)
        frame = load_served_log(paths, SERVICE).frame
        first = frame.groupby("user_id")["__log_timestamp"].min()
        today = [u for u in first.index if signed_up_today(int(u))]
        assert today, "no served user of the first group"
        file = paths.exports / "user_attributes.parquet"
        table = pq.read_table(file)
        users = table.to_pandas()
        moved = users["user_id"].isin(today)
        signup = pd.to_datetime(users.loc[moved, "user_id"].map(first), utc=True)
        users.loc[moved, "feature_ts"] = signup - pd.Timedelta(minutes=1)
        pq.write_table(pa.Table.from_pandas(users, schema=table.schema, preserve_index=False), file)

    outcome = _serve_day(online_copy, fault=unknown_online, after=load_todays_signups)
    skew = _check(outcome, "feature_skew")
    served = load_served_log(StatePaths(online_copy["home"]), SERVICE).frame
    users = served["user_id"].astype(int)
    lost_rows = int((users.map(hidden) & ~users.map(signed_up_today)).sum())
    segment = skew.details["features"]["user_segment"]
    assert round(segment["mismatch_rate"] * segment["rows"]) == lost_rows > 0, skew.line()
    assert skew.verdict == "fail" and "user_attributes:user_segment" in skew.summary
    # Counted: rows with a view the online store held nothing of (the hidden users, and the
    # served day's own new users and items, unknown to it too).
    status = [c for c in served.columns if c.endswith("__status")]
    views = {c.split("__", 1)[0] for c in status}
    unknown = [
        (served[[c for c in status if c.startswith(f"{view}__")]] == FieldStatus.NOT_FOUND).all(
            axis=1
        )
        for view in views
    ]
    unpublished = int(pd.concat(unknown, axis=1).any(axis=1).sum())
    assert skew.details["unpublished_rows"] == unpublished >= int(users.map(hidden).sum())
    assert "did not hold yet" in skew.summary
    assert skew.details["features"]["user_ctr_28d"]["verdict"] == "pass"
