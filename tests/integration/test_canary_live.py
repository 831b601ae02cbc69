"""The live canary phase for real, as with your own data (``source: raw``): a canary opens
the phase, the deployed service's score log and the impressions that arrive the next day (with
their clicks, through a real warehouse build) are joined by request id, and a later canary run
looks and decides under the promotion lock. Real MLflow registry, Feast stores, DuckDB, models.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _config(state: dict, **extra):
    from rankflow.config import load_config

    overrides = {f"simulation.{k}": v for k, v in state["simulation"].items()}
    overrides.update({f"registry.gates.{k}": v for k, v in state["gates"].items()})
    overrides.update(
        {
            "source": "raw",  # the simulator's files, treated as a user's own data
            "serving.canary_share": 0.5,
            "training_set.valid_days": 2,
            "training_set.test_days": 2,
            "canary.window_days": 6,
            "canary.measure_warm_start": False,
            # Permissive offline margins: this test is about the phase after the gate.
            "canary.offline.auc_margin": 0.2,
            "canary.offline.logloss_margin": 0.2,
            "canary.offline.max_ece_increase": 0.2,
            "canary.online.min_views": 100,
            **extra,
        }
    )
    return load_config(None, overrides)


def _serve_next_day(settings, config, state: dict) -> tuple[date, pd.DataFrame]:
    """The next day arrives as production would: its requests are scored by the service (both
    arms, the front end's request ids), then its impressions land in raw with their clicks."""
    from rankflow.serving.replay import in_process, raw_day_traffic
    from rankflow.serving.service import ScoringService
    from rankflow.sim.simulate import simulate

    end = date.fromisoformat(state["simulation"]["end_date"])
    later = config.simulation.model_copy(update={"end_date": end + timedelta(days=1)})
    simulate(later, settings.paths.raw, settings.paths.truth)
    day = end  # the new day's partition
    traffic = raw_day_traffic(settings.paths.raw, day)
    service = ScoringService(settings, config.scoring())
    service.start(poll=False)
    arms = []
    try:
        score = in_process(service)
        for request_id, group in traffic.groupby("request_id", sort=False):
            response = score(
                {
                    "request_id": str(request_id),
                    "user_id": int(group["user_id"].iloc[0]),
                    "item_ids": [int(v) for v in group["item_id"]],
                    "positions": [int(v) for v in group["position"]],
                    "device": str(group["device"].iloc[0]),
                    "time": pd.Timestamp(group["event_timestamp"].iloc[0]).isoformat(),
                }
            )
            arms.append((str(request_id), response["arm"]))
    finally:
        service.close()  # flushes the score log
    return day, pd.DataFrame(arms, columns=["request_id", "arm"])


def _challenger_users_click_more(raw, day: date, arms: pd.DataFrame, seed: int = 0) -> None:
    """Rewrite the day's partition (as late data would): impressions the challenger served get
    clicks at 50%, the champion's keep the simulator's (~8%). A lift no rule can miss."""
    from rankflow.data.contract import partition_dir

    rng = np.random.default_rng(seed)
    challenger = set(arms.loc[arms["arm"] == "challenger", "request_id"])
    for path in sorted(partition_dir(raw, "impressions", day).glob("*.parquet")):
        table = pq.read_table(path)
        frame = table.to_pandas()
        boost = frame["request_id"].isin(challenger).to_numpy()
        clicked = frame["clicked"].to_numpy().copy()
        clicked[boost] = (rng.random(boost.sum()) < 0.5).astype(clicked.dtype)
        frame["clicked"] = clicked
        pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), path)


def test_a_live_phase_opens_looks_each_run_and_promotes_on_the_labelled_served_log(
    online_copy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from rankflow.canary.live import phase_path, read_phase
    from rankflow.canary.run import run_canary
    from rankflow.registry.aliases import aliases_of
    from rankflow.settings import Settings
    from rankflow.warehouse.build import build_warehouse

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    config = _config(online_copy)
    settings = Settings.resolve(home=online_copy["home"])
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    model, before = online_copy["model"], online_copy["champion"]

    # 1. The canary trains, gates and opens the phase: @challenger serves, nothing decided.
    opened = run_canary(settings, config.canary_run())
    assert opened.decision == "phase_started", opened.summary()
    challenger = opened.challenger["serving_version"]
    assert aliases_of(client, model) == {"champion": before, "challenger": challenger}
    phase = read_phase(settings.paths, model)
    assert (phase.champion, phase.challenger, phase.looks) == (before, challenger, [])
    tags = client.get_model_version(model, challenger).tags
    assert tags["rankflow.canary.decision"] == "phase_started"

    # 2. A look before any labelled traffic: more traffic needed, the look is recorded.
    early = run_canary(settings, config.canary_run(), look_only=True)
    assert early.decision == "inconclusive", early.summary()
    assert early.online["views_champion"] == early.online["views_challenger"] == 0
    assert len(read_phase(settings.paths, model).looks) == 1

    # 3. A day of traffic through the service, its impressions arrive with clicks, the daily
    #    build loads them; the next look sees every served impression in its arm and promotes.
    day, arms = _serve_next_day(settings, config, online_copy)
    assert set(arms["arm"]) == {"champion", "challenger"}
    _challenger_users_click_more(settings.paths.raw, day, arms)
    build_warehouse(settings.paths, vars=config.warehouse.model_dump(), raw_dir=settings.paths.raw)
    shown = pd.concat(
        pq.read_table(p).to_pandas()
        for p in (settings.paths.raw / "impressions" / f"event_date={day}").glob("*.parquet")
    ).merge(arms, on="request_id")
    decided = run_canary(settings, config.canary_run(), look_only=True)
    online = decided.online
    assert online["views_champion"] == (shown["arm"] == "champion").sum()
    assert online["views_challenger"] == (shown["arm"] == "challenger").sum()
    assert online["ctr_challenger"] > online["ctr_champion"]
    assert [look["look"] for look in online["looks"]] == [1, 2]
    assert decided.decision == "promoted", decided.summary()
    assert aliases_of(client, model) == {"champion": challenger, "previous": before}
    assert not phase_path(settings.paths, model).exists()  # the phase is closed
    assert client.get_model_version(model, challenger).tags["rankflow.canary.decision"] == (
        "promoted"
    )

    # 4. With no phase open, a look-only run changes nothing.
    idle = run_canary(settings, config.canary_run(), look_only=True)
    assert idle.decision == "idle"
    assert aliases_of(client, model) == {"champion": challenger, "previous": before}


def test_a_phase_the_registry_no_longer_shows_is_closed(
    online_copy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """@challenger removed by hand (or a rollback) ends the phase: the next look-only run
    closes it and changes nothing."""
    from rankflow.canary.live import phase_path, start_phase
    from rankflow.canary.run import run_canary
    from rankflow.settings import Settings

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    settings = Settings.resolve(home=online_copy["home"])
    model = online_copy["model"]
    start_phase(settings.paths, model, online_copy["champion"], "999", "run", 6)
    outcome = run_canary(settings, _config(online_copy).canary_run(), look_only=True)
    assert outcome.decision == "idle"
    assert not phase_path(settings.paths, model).exists()


def test_a_live_phase_without_a_canary_share_is_refused_before_training(
    online_copy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rankflow.canary.live import LivePhaseError
    from rankflow.canary.run import run_canary
    from rankflow.settings import Settings

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    settings = Settings.resolve(home=online_copy["home"])
    config = _config(online_copy, **{"serving.canary_share": 0.0})
    with pytest.raises(LivePhaseError, match=r"serving\.canary_share > 0"):
        run_canary(settings, config.canary_run())
    simulated = _config(online_copy, **{"canary.phase": "simulated"})
    with pytest.raises(LivePhaseError, match="source: simulate"):
        run_canary(settings, simulated.canary_run())
