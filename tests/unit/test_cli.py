"""The one command line: flows by their deployment entrypoints, one-line user errors."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rankflow.cli import FLOW_ENTRYPOINTS, build_parser, main, parse_overrides
from rankflow.errors import ConfigError
from rankflow.paths import REPO_ROOT


def test_flow_entrypoints_are_the_deployments_entrypoints() -> None:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployed = {d["entrypoint"] for d in spec["deployments"]}
    assert set(FLOW_ENTRYPOINTS.values()) <= deployed


def test_overrides_parse_yaml_values_and_reject_bad_items() -> None:
    assert parse_overrides(["a.b=3", "c=[1, 2]", "d=null"]) == {"a.b": 3, "c": [1, 2], "d": None}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["no-equals-sign"])


def test_a_config_error_is_a_short_message_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulation:\n  n_impresions: 10\n")
    code = main(["--home", str(tmp_path), "--config", str(bad), "run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") <= 3
    assert "n_impresions" in err and str(bad) in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``rankflow --help`` lists every command with a line saying what it does, and
    ``rankflow COMMAND --help`` prints the command's usage and exits 0."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {action.dest: action.help for action in commands._choices_actions}
    assert {"run", "train", "build-features", "build", "validate", "settings"} <= set(helps)
    assert set(helps) == set(commands.choices)  # none without a help line
    listing = " ".join(parser.format_help().split())
    for name, text in helps.items():
        assert text and len(text.split()) >= 3, name
        assert f"{name} {' '.join(text.split())}" in listing, name
    for name in commands.choices:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([name, "--help"])
        assert exited.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: rankflow {name} "), name


def test_a_live_canary_without_a_canary_share_is_one_line_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Your own data (source: raw) means a live phase, which needs the service to send users
    to @challenger: said in one line naming the key, before Prefect or any training starts."""
    code = main(["--home", str(tmp_path), "--set", "source=raw", "canary"])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "serving.canary_share" in err


def test_a_bad_option_value_names_the_option_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--home", str(tmp_path), "simulate", "--impressions", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: invalid configuration from --impressions\n")
    assert "simulation.n_impressions" in err
    assert not (tmp_path / "raw").exists()


def _settings_shown(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_settings_show_the_environment_and_the_resolved_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("simulation:\n  days: 9\n")
    home = str(tmp_path / "home")
    shown = _settings_shown(
        capsys,
        "--home",
        home,
        "--config",
        str(mine),
        "--set",
        "warehouse.ctr_prior=0.05",
        "settings",
    )
    assert shown["environment"]["home"] == home
    assert shown["environment_from"]["home"] == "--home"
    assert shown["config_file"] == str(mine)
    assert shown["config"]["simulation"]["days"] == 9  # from the file
    assert shown["config"]["warehouse"]["ctr_prior"] == 0.05  # from --set
    assert shown["overrides"] == {
        "warehouse.ctr_prior": {"value": 0.05, "from": "--set warehouse.ctr_prior"}
    }


def test_settings_refuse_an_unknown_key_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--home", str(tmp_path), "--set", "simulation.dayz=3", "settings"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == (
        "error: invalid configuration from --set simulation.dayz\n"
        "  simulation.dayz: unknown key; did you mean simulation.days?\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["setings"], "invalid choice: 'setings'; did you mean 'settings'?"),
        (["gapcheck"], "did you mean 'gap-check'?"),
        (["replay", "--mode", "clsed"], "did you mean 'closed'?"),
    ],
)
def test_a_mistyped_command_or_choice_gets_the_nearest_one(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert expected in capsys.readouterr().err.splitlines()[-1]


# A `rankflow serve` process: imports Feast, torch and MLflow (~10 s of CPU).
@pytest.mark.slow
def test_serve_on_a_state_that_is_not_built_is_one_line_saying_to_build_it(
    tmp_path: Path,
) -> None:
    """Not under uvicorn's traceback of a failed startup: the service opens before uvicorn."""
    with socket.socket() as probe:  # a free port, in case it did start
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "rankflow", "--home", str(tmp_path), "serve", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("error: feature service 'ctr_ranker_v1' is not in the registry")
    assert "`rankflow run`" in line
