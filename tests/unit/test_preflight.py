"""Both configs are validated before any stage runs; a bad model config is one line naming the
file and the key, not a traceback after dbt and Feast have run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rankflow.cli import main as rankflow_main
from rankflow.config import ConfigError, load_config
from rankflow.paths import REPO_ROOT
from rankflow.preflight import check_model_config


def configs(tmp_path: Path, change: dict | None, *, missing: bool = False) -> Path:
    """A pipeline config pointing at a copy of configs/model.yaml with ``change`` applied."""
    model = yaml.safe_load((REPO_ROOT / "configs" / "model.yaml").read_text())
    for section, values in (change or {}).items():
        model.setdefault(section, {}).update(values)
    model_path = tmp_path / "model.yaml"
    if not missing:
        model_path.write_text(yaml.safe_dump(model))
    pipeline = yaml.safe_load((REPO_ROOT / "configs" / "rankflow.yaml").read_text())
    pipeline["model_config_path"] = str(model_path)
    path = tmp_path / "rankflow.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


@pytest.mark.parametrize(
    ("change", "missing", "expected"),
    [
        ({"training": {"batch_size": -1}}, False, "batch_size"),
        ({"training": {"batch_sise": 10}}, False, "batch_sise"),
        (None, True, "not found"),
    ],
)
def test_a_bad_model_config_is_one_line_naming_file_and_key(
    tmp_path: Path, change: dict | None, missing: bool, expected: str
) -> None:
    config = load_config(configs(tmp_path, change, missing=missing))
    with pytest.raises(ConfigError) as caught:
        check_model_config(config)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "model.yaml") in message and expected in message


def test_the_flow_refuses_before_prefect_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = configs(tmp_path, {"training": {"batch_size": -1}})
    assert rankflow_main(["--config", str(path), "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "batch_size" in err and "model.yaml" in err
    assert len(err.splitlines()) == 1


def test_the_default_configs_pass() -> None:
    check_model_config(load_config(REPO_ROOT / "configs" / "rankflow.yaml"))
