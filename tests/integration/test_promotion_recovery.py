"""Crash-safe promotion on a real MLflow registry (a copy of the session's built state: a
champion and a second version of the serving model).

A kill between a plan's alias writes is simulated by letting only its first ``k`` alias
writes through (``Killed`` is a BaseException: no handler of the code under test runs, as
when the process dies; the promotion lock is released as the dead process's would be). The
next holder of the lock must finish the plan, or refuse to act on aliases that are no step of
it, and ``rankflow rollback`` must never take ``@previous == @champion`` for a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient

from rankflow.cli import main
from rankflow.registry import aliases as aliases_module
from rankflow.registry.aliases import TAG_PLAN, aliases_of, apply_plan, read_serving_state
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import CHALLENGER, CHAMPION, PREVIOUS, canary_promotion
from rankflow.registry.versions import TAG_ROLLED_BACK
from rankflow.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Killed(BaseException):
    """The process applying the plan died here."""


@pytest.fixture
def state(online_copy: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The copy, its client and settings, and ``kill_after(k)``: the next plan applied gets
    only its first ``k`` alias writes through, then its process dies."""
    monkeypatch.setenv("RANKFLOW_HOME", str(online_copy["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", online_copy["tracking_uri"])
    client = MlflowClient(online_copy["tracking_uri"], online_copy["tracking_uri"])
    real_write, real_tags = aliases_module._write_alias, aliases_module._set_tags

    def kill_after(k: int) -> None:
        landed: list[str] = []

        def die_at(k_landed: int) -> None:
            if len(landed) == k_landed:
                raise Killed(f"killed after {k} alias writes")

        def write(*args: Any, **kwargs: Any) -> None:
            die_at(k)
            real_write(*args, **kwargs)
            landed.append(args[2])

        def tags(*args: Any, **kwargs: Any) -> None:  # after the last alias write
            die_at(k)
            real_tags(*args, **kwargs)

        monkeypatch.setattr(aliases_module, "_write_alias", write)
        monkeypatch.setattr(aliases_module, "_set_tags", tags)

    def revive() -> None:  # the next process runs the real code
        monkeypatch.setattr(aliases_module, "_write_alias", real_write)
        monkeypatch.setattr(aliases_module, "_set_tags", real_tags)

    yield {
        **online_copy,
        "client": client,
        "settings": Settings.resolve(home=online_copy["home"]),
        "kill_after": kill_after,
        "revive": revive,
    }


def _record(client: MlflowClient, model: str) -> dict[str, Any]:
    return json.loads(client.get_registered_model(model).tags[TAG_PLAN])


def _rollback(state: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--home", str(state["home"]), "rollback", "--reason", "test: CTR fell"])
    out, err = capsys.readouterr()
    return code, out, err


def _promote_killed(state: dict[str, Any], k: int) -> None:
    """The canary's promotion of the second version over the champion, killed after ``k`` of
    its three alias writes (@previous, @champion, @challenger removed)."""
    client, model, champion, other = (
        state["client"],
        state["model"],
        state["champion"],
        state["other"],
    )
    client.set_registered_model_alias(model, CHALLENGER, other)
    state["kill_after"](k)
    with pytest.raises(Killed), promotion_lock(state["settings"], model):
        plan = canary_promotion(read_serving_state(client, model), other, "won", champion)
        apply_plan(client, model, plan, by="a canary about to die")
    state["revive"]()


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_a_promotion_killed_between_its_alias_writes_is_finished_by_the_next_rollback(
    state: dict[str, Any], k: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """k=1 is the reported failure: @previous already names the champion. The rollback finds
    the plan, finishes it, and stops (one line, rc 1): the aliases it would roll back from are
    not the ones its caller saw. Run again, it rolls the finished promotion back."""
    client, model, champion, other = (
        state["client"],
        state["model"],
        state["champion"],
        state["other"],
    )
    _promote_killed(state, k)

    steps = [
        {CHAMPION: champion, CHALLENGER: other},
        {CHAMPION: champion, PREVIOUS: champion, CHALLENGER: other},
        {CHAMPION: other, PREVIOUS: champion, CHALLENGER: other},
        {CHAMPION: other, PREVIOUS: champion},
    ]
    assert aliases_of(client, model) == steps[k]
    record = _record(client, model)
    assert record["state"] == "pending" and record["by"] == "a canary about to die"
    assert record["before"] == {PREVIOUS: None, CHAMPION: champion, CHALLENGER: other}

    code, out, err = _rollback(state, capsys)

    assert code == 1 and out == "", out
    assert err.strip().count("\n") == 0, err
    assert err.startswith(f"error: {model}: an interrupted promote by a canary about to die at ")
    landed = "all 3 alias writes had landed" if k == 3 else f"stopped after {k} of 3 alias writes"
    assert landed in err and "nothing rolled back" in err, err
    assert f"the aliases now read @champion v{other}, @previous v{champion}" in err, err
    assert aliases_of(client, model) == steps[3]
    assert _record(client, model)["state"] == "done"
    assert TAG_ROLLED_BACK not in client.get_model_version(model, champion).tags
    if k < 2:  # the champion move was written by the recovery, which says so on the version
        reason = client.get_model_version(model, other).tags["rankflow.alias.champion.reason"]
        assert reason.startswith("finishing an interrupted promote by a canary about to die")

    code, out, err = _rollback(state, capsys)

    assert code == 0, err
    assert f"@champion -> v{champion}" in out
    assert aliases_of(client, model) == {CHAMPION: champion}
    assert client.get_model_version(model, other).tags[TAG_ROLLED_BACK] == "test: CTR fell"
    assert TAG_ROLLED_BACK not in client.get_model_version(model, champion).tags
    assert _record(client, model)["decision"] == "rollback"
    assert _record(client, model)["state"] == "done"


def test_rollback_to_a_previous_that_is_the_champion_is_refused_and_tags_nothing(
    state: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The half-moved aliases with no record (left by a version that did not record plans, or
    by hand): refused in one line naming the version; the live champion is not marked."""
    client, model, champion = state["client"], state["model"], state["champion"]
    client.set_registered_model_alias(model, PREVIOUS, champion)

    code, out, err = _rollback(state, capsys)

    assert code == 1 and out == ""
    assert err.strip() == (
        f"error: {model}: @previous is v{champion}, the same version as @champion: "
        "nothing to roll back to"
    )
    assert aliases_of(client, model) == {CHAMPION: champion, PREVIOUS: champion}
    assert TAG_ROLLED_BACK not in client.get_model_version(model, champion).tags


def test_aliases_moved_by_hand_after_a_kill_are_reported_not_written_over(
    state: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    client, model, champion, other = (
        state["client"],
        state["model"],
        state["champion"],
        state["other"],
    )
    _promote_killed(state, 1)
    client.delete_registered_model_alias(model, PREVIOUS)  # someone's repair by hand
    client.delete_registered_model_alias(model, CHALLENGER)
    by_hand = aliases_of(client, model)

    code, _, err = _rollback(state, capsys)

    assert code == 1
    assert "which is no step of it" in err and "nothing written, the record set aside" in err
    assert aliases_of(client, model) == by_hand == {CHAMPION: champion}
    assert _record(client, model)["state"] == "abandoned"
    # Set aside, the record no longer stands in the way: the next rollback judges the aliases.
    code, _, err = _rollback(state, capsys)
    assert code == 1 and err.strip() == f"error: {model}: no @previous to roll back to", err
    assert other not in aliases_of(client, model).values()


def test_a_rollback_killed_after_its_first_write_is_finished_by_the_next_canary(
    state: dict[str, Any],
) -> None:
    """The daily look-only canary (which has nothing else to do) finishes it: @previous
    removed and the demoted version marked rolled back, so no canary re-proposes it."""
    from rankflow.canary.rollback import rollback
    from rankflow.canary.run import run_canary
    from rankflow.config import load_config
    from tests.fixtures.given_canary import given_verdict

    client, model, champion, other = (
        state["client"],
        state["model"],
        state["champion"],
        state["other"],
    )
    client.set_registered_model_alias(model, CHALLENGER, other)
    with promotion_lock(state["settings"], model):
        plan = canary_promotion(read_serving_state(client, model), other, "won", champion)
        apply_plan(client, model, plan)
    assert aliases_of(client, model) == {CHAMPION: other, PREVIOUS: champion}
    config = load_config(None, {"canary.measure_warm_start": False})

    state["kill_after"](1)
    with pytest.raises(Killed):
        rollback(state["settings"], config.tracking, model, "test: CTR fell")
    state["revive"]()
    assert aliases_of(client, model) == {CHAMPION: champion, PREVIOUS: champion}
    assert TAG_ROLLED_BACK not in client.get_model_version(model, other).tags

    look = run_canary(
        state["settings"], config.canary_run(), look_only=True, simulation=given_verdict("reject")
    )

    assert look.decision == "idle", look.summary()
    (line, *_) = look.stages
    assert line.startswith(f"{model}: an interrupted rollback by rankflow rollback (pid ")
    assert "stopped after 1 of 2 alias writes" in line and "finished: @previous removed" in line
    assert aliases_of(client, model) == {CHAMPION: champion}
    assert client.get_model_version(model, other).tags[TAG_ROLLED_BACK] == "test: CTR fell"
    assert TAG_ROLLED_BACK not in client.get_model_version(model, champion).tags
    assert _record(client, model)["state"] == "done"
