"""Feast imports without typeguard's per-method recompilation (rankflow/feast_typeguard.py), and
every other use of typeguard still checks types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rankflow.paths import REPO_ROOT

# A fresh interpreter that imports Feast (~5 s of CPU).
pytestmark = pytest.mark.slow

PROBE = """
import rankflow  # first, as every rankflow process imports it
import typeguard
from feast import FeatureView, OnDemandFeatureView

def instrumented(function):
    return "check_argument_types_internal" in function.__code__.co_names

print("feast", instrumented(FeatureView.__init__), instrumented(OnDemandFeatureView.__init__))

@typeguard.typechecked
def double(x: int) -> int:
    return 2 * x

print("own", instrumented(double))
try:
    double("a")
except typeguard.TypeCheckError:
    print("own checks types")
"""


def test_feast_classes_are_left_as_written_and_other_typeguard_users_still_check(
    tmp_path: Path,
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, str(probe)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.splitlines() == ["feast False False", "own True", "own checks types"]
