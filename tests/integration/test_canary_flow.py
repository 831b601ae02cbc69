"""The ``canary`` Prefect flow for real (temporary Prefect server, real MLflow registry, real
Feast stores) on the shared online state, and ``rankflow rollback`` from the command line."""

from __future__ import annotations

import json
import os
import sys

import pytest

from flows.canary import canary
from flows.params import ConfigParams
from rankflow.cli import main
from rankflow.paths import REPO_ROOT
from tests.fixtures.given_canary import given_verdict

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _overrides(state: dict) -> dict:
    overrides = {f"simulation.{k}": v for k, v in state["simulation"].items()}
    overrides.update({f"registry.gates.{k}": v for k, v in state["gates"].items()})
    overrides.update(
        {
            "training_set.valid_days": 2,
            "training_set.test_days": 2,
            # The state's own model config (two epochs): these tests are about decisions.
            "model_config_path": state["model_config"],
            "canary.window_days": 6,
            "canary.traffic_impressions": 3000,
            "canary.looks": 2,
            "canary.measure_warm_start": False,
            "canary.online.min_views": 100,
        }
    )
    return overrides


def test_the_canary_flow_decides_and_records_the_decision(
    prefect_api: str, online_copy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    # With the warm-vs-cold measurement (off by default, on in `rankflow demo`): the challenger
    # is its warm arm, so it costs one more training (the cold arm), not two.
    overrides = {**_overrides(online_copy), "canary.measure_warm_start": True}
    summary = canary(config=ConfigParams(overrides=overrides), refresh_features=False)
    report = summary.details["canary_report"]
    assert report.startswith("canary: ")
    decision = summary.details["canary"]["decision"]
    assert decision in {
        "rejected_gates",
        "rejected_offline",
        "rejected_online",
        "inconclusive",
        "promoted",
    }, report
    assert f"canary: {decision.upper()}" in summary.render()
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    run = client.get_run(summary.details["canary"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["rankflow.canary.decision"] == decision
    assert run.data.tags["rankflow.canary.started_against"] == online_copy["champion"]
    assert run.data.metrics["warm_start_warm_is_challenger"] == 1.0
    assert run.data.metrics["warm_start_cold_steps"] > 0
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


# The decision step for real: what follows a phase that says "promote". The phase itself is
# played for real by tests/e2e/test_canary.py; here its verdict is given, and training, the
# offline gate, the promotion lock, the alias moves, the records and rollback are all real.


def test_a_promoting_phase_moves_the_aliases_a_moved_champion_aborts_and_rollback_restores(
    online_copy: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from rankflow.canary.run import run_canary
    from rankflow.config import load_config
    from rankflow.registry.aliases import aliases_of
    from rankflow.settings import Settings

    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    overrides = _overrides(online_copy)
    # Permissive offline margins: this test is about what happens after the phase.
    overrides.update(
        {
            "canary.offline.auc_margin": 0.2,
            "canary.offline.logloss_margin": 0.2,
            "canary.offline.max_ece_increase": 0.2,
        }
    )
    config = load_config(None, overrides)
    settings = Settings.resolve(home=online_copy["home"])
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    model, before = online_copy["model"], online_copy["champion"]

    promoted = run_canary(settings, config.canary_run(), simulation=given_verdict("promote"))
    assert promoted.decision == "promoted", promoted.summary()
    new = promoted.challenger["serving_version"]
    aliases = aliases_of(client, model)
    assert aliases["champion"] == new and aliases["previous"] == before, aliases
    assert "challenger" not in aliases
    assert client.get_model_version(model, new).tags["rankflow.canary.decision"] == "promoted"

    assert main(["--home", str(online_copy["home"]), "rollback", "--reason", "test: CTR fell"]) == 0
    assert f"-> v{before}" in capsys.readouterr().out
    aliases = aliases_of(client, model)
    assert aliases["champion"] == before and "previous" not in aliases, aliases
    assert client.get_model_version(model, new).tags["rankflow.rolled_back"] == "test: CTR fell"

    # The next canary on the same inputs trains the same model again (its training cache):
    # the rollback is not undone by it.
    refused = run_canary(settings, config.canary_run(), simulation=given_verdict("promote"))
    assert refused.decision == "rejected_rolled_back", refused.summary()
    assert f"{model} v{new}" in refused.reason and "test: CTR fell" in refused.reason
    assert "canary.allow_rolled_back" in refused.reason
    assert refused.online is None and refused.offline is None  # neither gate nor phase ran
    assert aliases_of(client, model) == {"champion": before}
    assert "rejected_rolled_back" in client.get_model_version(model, before).description
    assert client.get_model_version(model, new).tags["rankflow.canary.decision"] == (
        "rejected_rolled_back"
    )

    # Allowed explicitly (a rollback for an outage, not the model), it is canaried again.
    config = load_config(None, {**overrides, "canary.allow_rolled_back": True})

    def another_canary_promotes(version: str) -> None:  # during this one's phase
        # What a concurrent canary on the same inputs does: it shares this one's challenger
        # version, promotes it and drops @challenger. This canary promoted nothing (the demo
        # once counted it as a second promotion: the plan had no move left to check).
        assert version == new
        client.set_registered_model_alias(model, "champion", new)
        client.delete_registered_model_alias(model, "challenger")

    racing = given_verdict("promote", another_canary_promotes)
    aborted = run_canary(settings, config.canary_run(), simulation=racing)
    assert aborted.decision == "aborted", aborted.summary()
    assert f"@champion is v{new}, the plan expected v{before}" in aborted.reason, aborted.reason
    assert aliases_of(client, model)["champion"] == new  # the other canary's move stands
    tags = client.get_model_version(model, aborted.challenger["serving_version"]).tags
    assert tags["rankflow.canary.decision"] == "aborted"
    assert any("canaried again because canary.allow_rolled_back" in s for s in aborted.stages)


def test_two_canary_processes_with_a_promoting_phase_promote_exactly_once(
    online_copy: dict,
) -> None:
    """Two canaries started together, each in its own process on one embedded state (SQLite
    registry, file locks), both told by their phase to promote the same challenger (identical
    inputs: the second reuses the first's training): one promotes, the other finds @champion
    moved under the promotion lock and aborts; both exit cleanly."""
    from mlflow import MlflowClient

    from rankflow.registry.aliases import aliases_of
    from rankflow.sim.scenario import start_together

    overrides = {
        **_overrides(online_copy),
        "canary.offline.auc_margin": 0.2,
        "canary.offline.logloss_margin": 0.2,
        "canary.offline.max_ece_increase": 0.2,
    }
    env = {
        **os.environ,
        "RANKFLOW_HOME": str(online_copy["home"]),
        "MLFLOW_TRACKING_URI": online_copy["tracking_uri"],
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        *(sys.executable, "-m", "tests.fixtures.given_canary"),
        *(str(online_copy["home"]), json.dumps(overrides), "promote"),
    ]
    results = start_together(command, env, n=2)

    assert [r["code"] for r in results] == [0, 0], results
    assert sorted(r["decision"] for r in results) == ["aborted", "promoted"], results
    (aborted,) = [r["line"] for r in results if r["decision"] == "aborted"]
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    aliases = aliases_of(client, online_copy["model"])
    assert aliases["previous"] == online_copy["champion"], aliases
    assert aliases["champion"] != online_copy["champion"], aliases
    assert "challenger" not in aliases
    # It read @champion when it started; under the promotion lock it found the other's
    # promotion, before setting @challenger or before promoting, whichever it reached first.
    before, after = online_copy["champion"], aliases["champion"]
    assert (
        f"@champion moved from v{before} to v{after}" in aborted
        or f"@champion is v{after}, the plan expected v{before}" in aborted
    ), aborted
