"""One settings object: explicit argument > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.errors import ConfigError, RankflowError
from rankflow.settings import ENV_VARS, REPO_ROOT, Settings


def test_defaults_are_the_embedded_profile() -> None:
    settings = Settings.resolve(environ={})
    assert settings.home == (REPO_ROOT / ".state").resolve()
    assert settings.profile == "local"
    assert settings.feast_online_store == "sqlite"
    assert settings.mlflow_tracking_uri is None
    assert settings.paths.warehouse == settings.home / "warehouse" / "rankflow.duckdb"


def test_precedence_explicit_then_environment_then_file_then_default(tmp_path: Path) -> None:
    environ = {"RANKFLOW_HOME": str(tmp_path / "env"), "RANKFLOW_REDIS": "redis-env:6379"}
    file = {"home": str(tmp_path / "file"), "redis_url": "file:1", "postgres_url": "pg://file"}
    settings = Settings.resolve(environ=environ, file=file, home=tmp_path / "arg")
    assert settings.home == tmp_path / "arg"  # explicit beats environment and file
    assert settings.redis_url == "redis-env:6379"  # environment beats file
    assert settings.postgres_url == "pg://file"  # file beats default
    assert settings.service_url == "http://127.0.0.1:8080"  # default
    # None is "not given", and a blank variable is unset
    assert (
        Settings.resolve(environ={"RANKFLOW_HOME": "  "}, home=None).home
        == (REPO_ROOT / ".state").resolve()
    )


def test_server_profile_switches_the_online_store_default_only() -> None:
    server = Settings.resolve(environ={"RANKFLOW_PROFILE": "server"})
    assert server.feast_online_store == "redis"
    explicit = Settings.resolve(environ={"RANKFLOW_PROFILE": "server"}, feast_online_store="sqlite")
    assert explicit.feast_online_store == "sqlite"


def test_bad_values_name_the_setting_and_its_source() -> None:
    with pytest.raises(ConfigError, match=r"settings.profile: 'cloud' \(from RANKFLOW_PROFILE\)"):
        Settings.resolve(environ={"RANKFLOW_PROFILE": "cloud"})
    with pytest.raises(ConfigError, match="unknown key"):
        Settings.resolve(environ={}, file={"hme": "/x"})
    assert issubclass(ConfigError, RankflowError)


def test_child_env_carries_the_settings_and_describe_masks_passwords(tmp_path: Path) -> None:
    settings = Settings.resolve(
        environ={}, home=tmp_path, postgres_url="postgresql+psycopg://rank:s3cret@db:5432/mlflow"
    )
    env = settings.as_env()
    assert env[ENV_VARS["home"]] == str(tmp_path)
    assert "MLFLOW_TRACKING_URI" not in env  # unset settings are not exported
    described = settings.describe()
    assert "s3cret" not in str(described)
    assert described["postgres_url"] == "postgresql+psycopg://rank:***@db:5432/mlflow"
