"""What a state was built with (rankflow/built_with.py): which requested values refuse a
command, which take the state's value, and the one line a refusal prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rankflow.built_with import (
    BuildRequest,
    StateSettingsError,
    build_request,
    build_settings,
    read_record,
    record_build,
    settled_overrides,
)
from rankflow.cli import build_parser, main
from rankflow.config import DEFAULT_CONFIG_PATH, load_config
from rankflow.paths import StatePaths

BUILT = {"simulation.n_impressions": 200_000, "simulation.end_date": "2026-03-11"}


def _built(paths: StatePaths, overrides: dict[str, Any], config: Path | None = None) -> None:
    """A state whose data was built by a command with ``overrides``."""
    request = build_request(config, overrides)
    record_build(paths, request, ("simulation", "warehouse"), by="run", git_sha="abc123")


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    built = StatePaths(tmp_path / "home")
    _built(built, BUILT)
    return built


def test_the_built_keys_are_the_simulation_and_the_warehouse_values_that_change_data() -> None:
    config = load_config()
    keys = build_settings("simulate", config.simulation, config.warehouse)
    assert keys["simulation.n_impressions"] == 1_000_000
    assert keys["warehouse.ctr_prior"] == 0.045
    assert "warehouse.lookback_days" not in keys  # how much a build redoes, not what it writes
    assert not [k for k in keys if k.split(".")[0] not in ("simulation", "warehouse")]
    # own data: the simulator writes nothing, so its section does not count
    raw = build_settings("raw", config.simulation, config.warehouse)
    assert raw and all(k.startswith("warehouse.") for k in raw)


def test_the_record_holds_the_values_the_file_and_the_commit(paths: StatePaths) -> None:
    data = json.loads(paths.built_with.read_text())
    assert data["settings"]["simulation.n_impressions"] == 200_000
    assert data["file_settings"]["simulation.n_impressions"] == 1_000_000
    assert data["built"]["simulation"]["git_sha"] == "abc123"
    assert data["built"]["warehouse"]["by"] == "run"
    assert not list(paths.root.glob(".*.tmp"))  # written by a rename


def test_a_command_that_asks_for_nothing_takes_the_states_values(paths: StatePaths) -> None:
    assert settled_overrides(paths, None, {}) == BUILT
    # repeating the build's values is the same request
    assert settled_overrides(paths, None, dict(BUILT)) == BUILT
    # asking only for keys that do not change the built data: those stay as asked
    other = {
        "canary.offline.auc_margin": 0.5,
        "serving.canary_share": 0.3,
        "registry.gates.min_auc": 0.5,
        "monitoring.psi": {"warn": 1, "fail": 2},
        "training_set.test_days": 2,
        "warehouse.lookback_days": 5,
    }
    assert settled_overrides(paths, None, other) == {**other, **BUILT}


@pytest.mark.parametrize(
    ("asked", "key", "built", "requested"),
    [
        ({"simulation.n_impressions": 1_000_000}, "simulation.n_impressions", "200000", "1000000"),
        ({"simulation.seed": 8}, "simulation.seed", "7", "8"),
        ({"simulation.drift_day": 3}, "simulation.drift_day", "null", "3"),
        ({"warehouse.ctr_prior": 0.05}, "warehouse.ctr_prior", "0.045", "0.05"),
        ({"warehouse.ctr_prior_strength": 5}, "warehouse.ctr_prior_strength", "20.0", "5.0"),
    ],
)
def test_a_command_that_asks_to_change_a_built_value_refuses_in_one_line(
    paths: StatePaths, asked: dict[str, Any], key: str, built: str, requested: str
) -> None:
    with pytest.raises(StateSettingsError) as refused:
        settled_overrides(paths, None, asked)
    message = str(refused.value)
    assert "\n" not in message
    assert f"built with {key}={built}" in message
    assert f"asks for {key}={requested} (from --set)" in message
    assert str(paths.root) in message and "--rebuild" in message
    assert refused.value.exit_code == 2


def test_the_refusal_names_every_key_that_differs_and_only_those(paths: StatePaths) -> None:
    asked = {"simulation.n_users": 50, "simulation.seed": 9, "canary.seed": 4}
    with pytest.raises(StateSettingsError) as refused:
        settled_overrides(paths, None, asked)
    message = str(refused.value)
    assert "simulation.n_users=10000" in message and "simulation.n_users=50" in message
    assert "simulation.seed=7" in message and "simulation.seed=9" in message
    assert "canary.seed" not in message and "n_impressions" not in message


def test_a_whole_section_set_at_once_asks_for_each_of_its_keys(paths: StatePaths) -> None:
    with pytest.raises(StateSettingsError, match=r"simulation\.n_impressions=5000 \(from --set\)"):
        settled_overrides(paths, None, {"simulation": {"n_impressions": 5000}})


def test_the_window_may_move(paths: StatePaths) -> None:
    """A later end date appends days by design: asked for, it is not a refusal."""
    later = {**BUILT, "simulation.end_date": "2026-03-12"}
    assert settled_overrides(paths, None, later) == later
    today = {"simulation.n_impressions": 200_000, "simulation.end_date": None}
    assert settled_overrides(paths, None, today) == today


def test_a_config_file_that_changed_since_the_build_asks_for_its_value(tmp_path: Path) -> None:
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    file = tmp_path / "rankflow.yaml"
    file.write_text(yaml.safe_dump(config))
    paths = StatePaths(tmp_path / "home")
    _built(paths, {}, file)
    assert settled_overrides(paths, file, {}) == {}

    config["simulation"]["n_impressions"] = 500_000  # the user edits the file
    file.write_text(yaml.safe_dump(config))
    with pytest.raises(StateSettingsError) as refused:
        settled_overrides(paths, file, {})
    assert f"simulation.n_impressions=500000 (from {file})" in str(refused.value)
    # ... and repeating the built value on the command line is fine
    assert settled_overrides(paths, file, {"simulation.n_impressions": 1_000_000}) == {
        "simulation.n_impressions": 1_000_000
    }


def test_own_data_is_not_held_to_the_simulation(paths: StatePaths) -> None:
    asked = {"source": "raw", "simulation.n_impressions": 5000}
    assert settled_overrides(paths, None, asked) == asked
    with pytest.raises(StateSettingsError, match=r"warehouse\.ctr_prior=0\.2"):
        settled_overrides(paths, None, {"source": "raw", "warehouse.ctr_prior": 0.2})


def test_a_state_without_a_record_takes_the_command_as_it_is(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    asked = {"simulation.n_impressions": 5000}
    assert settled_overrides(paths, None, asked) == asked
    assert read_record(paths) is None


def test_a_broken_record_is_one_line_naming_it(paths: StatePaths) -> None:
    paths.built_with.write_text("{not json")
    with pytest.raises(StateSettingsError, match=r"built-with\.json: unreadable"):
        settled_overrides(paths, None, {})


def test_each_section_keeps_its_record_until_it_is_built_again(paths: StatePaths) -> None:
    rebuilt = build_request(None, {"warehouse.ctr_prior": 0.05, "simulation.n_impressions": 900})
    record_build(paths, rebuilt, ("warehouse",), by="build", git_sha=None)
    record = read_record(paths)
    assert record is not None
    assert record.settings["warehouse.ctr_prior"] == 0.05
    assert record.settings["simulation.n_impressions"] == 200_000  # not simulated again
    assert record.built["warehouse"]["by"] == "build" and record.built["simulation"]["by"] == "run"


def test_a_derived_build_keeps_the_files_values(paths: StatePaths) -> None:
    """The demo re-draws the data with drift: later commands keep the drifted state."""
    config = load_config(None, {**BUILT, "simulation.drift_day": 20})
    drifted = build_settings("simulate", config.simulation, config.warehouse)
    record_build(
        paths, BuildRequest(drifted, None), ("simulation", "warehouse"), by="demo", git_sha=None
    )
    assert settled_overrides(paths, None, {}) == {**BUILT, "simulation.drift_day": 20}


def test_only_the_commands_that_build_take_rebuild() -> None:
    parser = build_parser()
    for command in ("run", "build-features", "build", "simulate", "canary"):
        assert parser.parse_args([command, "--rebuild"]).rebuild, command
    for command in ("train", "serve", "gap-check", "demo", "replay"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--rebuild"])


def test_the_cli_refuses_before_writing_anything(
    paths: StatePaths, capsys: pytest.CaptureFixture[str]
) -> None:
    before = paths.built_with.read_bytes()
    code = main(["--home", str(paths.root), "simulate", "--impressions", "5000"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "simulation.n_impressions=200000" in err and "simulation.n_impressions=5000" in err
    assert not paths.raw.exists() and not paths.truth.exists()
    assert paths.built_with.read_bytes() == before
