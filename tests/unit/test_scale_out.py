"""The Dask option's preconditions and its config key (the run itself: tests/server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.scale_out import check_ready
from rankflow.config import load_config
from rankflow.errors import ConfigError
from rankflow.settings import Settings


def test_dask_needs_a_prefect_server_and_a_tracking_server(tmp_path: Path) -> None:
    config = load_config(None, {"scale_out.task_runner": "dask"})
    local = Settings.resolve(home=tmp_path, environ={})
    with pytest.raises(ConfigError, match="needs a Prefect server"):
        check_ready(config, local)
    with_prefect = local.replace(prefect_api_url="http://127.0.0.1:4200/api")
    with pytest.raises(ConfigError, match="needs an MLflow tracking server"):
        check_ready(config, with_prefect)
    sqlite = with_prefect.replace(mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(ConfigError, match="sqlite:///"):
        check_ready(config, sqlite)
    check_ready(config, with_prefect.replace(mlflow_tracking_uri="http://mlflow:5000"))


def test_task_runner_is_validated_by_name() -> None:
    assert load_config(None).scale_out.task_runner == "sequential"
    with pytest.raises(ConfigError, match=r"scale_out\.task_runner"):
        load_config(None, {"scale_out.task_runner": "ray"})
