"""The ``canary`` Prefect flow for real (temporary Prefect server, real MLflow registry, real
Feast stores) on the shared online state, and ``rankflow rollback`` from the command line."""

from __future__ import annotations

import pytest

from flows.canary import canary
from flows.params import ConfigParams
from rankflow.cli import main

pytestmark = pytest.mark.integration


def _overrides(state: dict) -> dict:
    overrides = {f"simulation.{k}": v for k, v in state["simulation"].items()}
    overrides.update({f"registry.gates.{k}": v for k, v in state["gates"].items()})
    overrides.update(
        {
            "training_set.valid_days": 2,
            "training_set.test_days": 2,
            "canary.window_days": 6,
            "canary.traffic_impressions": 3000,
            "canary.looks": 2,
            "canary.measure_warm_start": False,
            "canary.online.min_views": 100,
        }
    )
    return overrides


def test_the_canary_flow_decides_and_records_the_decision(
    prefect_api: None, online_copy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    summary = canary(config=ConfigParams(overrides=_overrides(online_copy)), refresh_features=False)
    report = summary.details["canary_report"]
    assert report.startswith("canary: ")
    decision = summary.details["canary"]["decision"]
    assert decision in {"rejected_gates", "rejected_offline", "rejected_online", "inconclusive",
                        "promoted"}, report  # fmt: skip
    assert f"canary: {decision.upper()}" in summary.render()
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    run = client.get_run(summary.details["canary"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["rankflow.canary.decision"] == decision
    assert run.data.tags["rankflow.canary.started_against"] == online_copy["champion"]
    name, version = summary.details["canary"]["challenger"]["family"]
    tags = client.get_model_version(name, version).tags
    assert tags["rankflow.canary.decision"] == decision
    assert tags["rankflow.warm_start.version"] == online_copy["champion"]
    assert "canary " + decision in client.get_model_version(name, version).description
    # The champion is recorded too, and moved only on a promotion.
    champion = client.get_model_version_by_alias(online_copy["model"], "champion")
    moved = str(champion.version) != online_copy["champion"]
    assert moved == (decision == "promoted")


def test_rollback_without_a_previous_champion_is_a_one_line_error(
    online_copy: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    code = main(["--home", str(online_copy["home"]), "rollback", "--reason", "test"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.strip().count("\n") == 0
    assert "no @previous" in err
