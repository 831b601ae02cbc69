"""What a run prints: a real dbt invocation on a tiny project, and a real build in a subprocess
whose output goes to a pipe, as ``make run > log 2>&1`` sends it to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankflow import console
from rankflow.paths import REPO_ROOT
from rankflow.warehouse.dbt_runner import dbt_output_args, invoke_dbt, summary_line

# dbt takes 10-20 s of CPU even on a one-model project
pytestmark = [pytest.mark.integration, pytest.mark.slow]

_PROJECT = {
    "dbt_project.yml": "name: tiny\nversion: '1.0'\nprofile: tiny\nmodel-paths: [models]\n",
    "profiles.yml": (
        "tiny:\n  target: local\n  outputs:\n    local:\n"
        "      type: duckdb\n      path: \"{{ env_var('TINY_DB') }}\"\n      threads: 1\n"
    ),
    "models/one.sql": "select 1 as id\n",
    # one test that passes and one that fails at warn severity
    "models/schema.yml": (
        "version: 2\nmodels:\n  - name: one\n    columns:\n      - name: id\n        tests:\n"
        "          - not_null\n"
        "          - accepted_values:\n              arguments:\n                values: [2]\n"
        "              config:\n                severity: warn\n"
    ),
}


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name, text in _PROJECT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("TINY_DB", str(tmp_path / "tiny.duckdb"))
    before = console.is_verbose()
    yield tmp_path
    console.set_verbose(before)


def _build(project: Path) -> object:
    return invoke_dbt(
        [
            "build",
            *dbt_output_args(),
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--log-path",
            str(project / "logs"),
            "--target-path",
            str(project / "target"),
            "--no-send-anonymous-usage-stats",
        ]
    )


def test_dbt_prints_nothing_and_the_build_reports_one_line(
    tiny_project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    console.set_verbose(False)
    run = _build(tiny_project)
    out, err = capfd.readouterr()
    assert out + err == ""
    log_file = tiny_project / "logs" / "dbt.log"
    line = summary_line("build", run, log_file)  # type: ignore[arg-type]
    assert line.startswith("dbt build: 1 models ok, 0 error; 1 tests ok, 1 warn, 0 error; ")
    assert line.endswith(f" s; full log {log_file}")
    log = log_file.read_text()
    assert "1 of 3 START sql view model main.one" in log  # the node lines are all there
    assert "\x1b" not in log


def test_verbose_prints_dbts_own_lines_without_colour_into_a_pipe(
    tiny_project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    console.set_verbose(True)
    _build(tiny_project)
    out, _ = capfd.readouterr()
    assert "START sql view model main.one" in out
    assert "Done. PASS=2 WARN=1" in out
    assert "\x1b" not in out  # captured: not a terminal


def test_a_redirected_build_prints_summaries_and_no_library_noise(tmp_path: Path) -> None:
    """``rankflow build-features`` (simulate, contract, dbt, Feast) with stdout and stderr in
    one pipe: one dbt line, one line per Feast stage, no colour codes, no library warnings,
    no exit noise; the tools' full output is in the state folder."""
    home = tmp_path / "home"
    sizes: dict[str, object] = {"n_users": 200, "n_items": 80, "n_impressions": 6000, "days": 5}
    sizes["end_date"] = "2026-03-11"
    args = [f"--set=simulation.{k}={v}" for k, v in sizes.items()]
    env = {**os.environ, "RANKFLOW_HOME": str(home)}
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "FORCE_COLOR", "CLICOLOR_FORCE"):
        env.pop(name, None)  # Prefect's temporary server; nothing forcing colour
    done = subprocess.run(
        [sys.executable, "-m", "rankflow", *args, "build-features"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    output = done.stdout
    assert done.returncode == 0, output[-3000:]
    for noise in ("\x1b", "Warning:", "nanobind", "leaked", "Created sqlite table", "Created "):
        assert noise not in output, f"{noise!r} in:\n{output}"
    dbt_lines = [line for line in output.splitlines() if line.startswith("dbt build: ")]
    assert len(dbt_lines) == 1, output
    assert f"full log {home / 'dbt' / 'logs' / 'dbt.log'}" in dbt_lines[0]
    assert output.count("feast apply: project rankflow") == 1
    assert output.count("feast materialize up to") == 1
    assert "Created sqlite table" in (home / "feast" / "logs" / "feast.log").read_text()
    assert " of 123 START " in (home / "dbt" / "logs" / "dbt.log").read_text()
