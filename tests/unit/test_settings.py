"""One settings object: explicit argument > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.errors import ConfigError, RankflowError
from rankflow.paths import REPO_ROOT, StatePaths
from rankflow.settings import ENV_VARS, SERVER_NEEDS, Settings, setting_sources


def test_defaults_are_the_embedded_profile() -> None:
    settings = Settings.resolve(environ={})
    assert settings.home == (REPO_ROOT / ".state").resolve()
    assert settings.profile == "local"
    assert settings.feast_online_store == "sqlite"
    assert settings.mlflow_tracking_uri is None
    assert settings.paths.warehouse == settings.home / "warehouse" / "rankflow.duckdb"


def test_settings_name_every_state_folder_under_home(tmp_path: Path) -> None:
    paths = Settings.resolve(home=tmp_path, environ={}).paths
    folders = {
        name: getattr(paths, name)
        for name, value in vars(StatePaths).items()
        if isinstance(value, property)
    }
    expected = {"logs", "serving_models", "reports", "canary", "locks", "training", "dbt"}
    assert expected <= set(folders)
    assert all(path.is_relative_to(tmp_path) for path in folders.values())
    assert len(set(folders.values())) == len(folders)  # no two names for one folder
    assert not hasattr(StatePaths, "default")  # no layout resolved behind the caller's back


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


SERVER_ENV = {
    "RANKFLOW_PROFILE": "server",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "RANKFLOW_REDIS": "redis:6379",
    "RANKFLOW_POSTGRES_URL": "postgresql://rank:pw@postgres:5432/rankflow",
    "PREFECT_API_URL": "http://prefect-server:4200/api",
}


def test_server_profile_switches_the_online_store_default_only() -> None:
    server = Settings.resolve(environ=SERVER_ENV)
    assert server.feast_online_store == "redis"
    assert server.redis_url == "redis:6379"
    explicit = Settings.resolve(environ=SERVER_ENV, feast_online_store="sqlite")
    assert explicit.feast_online_store == "sqlite"


@pytest.mark.parametrize(
    ("setting", "variable"),
    [
        ("mlflow_tracking_uri", "MLFLOW_TRACKING_URI"),
        ("redis_url", "RANKFLOW_REDIS"),
        ("postgres_url", "RANKFLOW_POSTGRES_URL"),
        ("prefect_api_url", "PREFECT_API_URL"),
    ],
)
def test_server_profile_refuses_a_missing_server_naming_it_and_its_variable(
    setting: str, variable: str
) -> None:
    environ = {k: v for k, v in SERVER_ENV.items() if k != variable}
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(environ=environ)
    message = str(caught.value)
    assert "\n" not in message
    assert f"missing {setting} (set {variable}:" in message
    others = set(SERVER_NEEDS) - {setting}
    assert not any(other in message for other in others), message  # only what is missing
    # A blank variable is unset; the local profile needs none of them.
    with pytest.raises(ConfigError, match=f"missing {setting} "):
        Settings.resolve(environ={**SERVER_ENV, variable: "  "})
    assert Settings.resolve(environ={**environ, "RANKFLOW_PROFILE": "local"}).profile == "local"


def test_server_profile_names_every_missing_setting_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.resolve(environ={"RANKFLOW_PROFILE": "server"})
    message = str(caught.value)
    for setting in SERVER_NEEDS:
        assert f"{setting} (set {ENV_VARS[setting]}:" in message
    assert "\n" not in message


def test_server_profile_without_redis_as_online_store_needs_no_redis_url() -> None:
    environ = {k: v for k, v in SERVER_ENV.items() if k != "RANKFLOW_REDIS"}
    settings = Settings.resolve(environ={**environ, "RANKFLOW_FEAST_PROFILE": "sqlite"})
    assert settings.feast_online_store == "sqlite"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MLFLOW_TRACKING_URI", "sqlite:////data/mlflow.db"),
        ("MLFLOW_TRACKING_URI", "/data/mlruns"),
        ("PREFECT_API_URL", "ephemeral"),
    ],
)
def test_server_profile_refuses_an_embedded_store_in_place_of_a_server(
    variable: str, value: str
) -> None:
    setting = next(k for k, v in ENV_VARS.items() if v == variable)
    with pytest.raises(
        ConfigError, match=f"{setting} '{value}' \\(from {variable}\\) is not a server"
    ):
        Settings.resolve(environ={**SERVER_ENV, variable: value})
    # an explicit argument is named as such
    with pytest.raises(ConfigError, match=r"\(from argument\) is not a server"):
        Settings.resolve(environ=SERVER_ENV, **{setting: value})


def test_bad_values_name_the_setting_and_its_source() -> None:
    with pytest.raises(ConfigError, match=r"settings.profile: 'cloud' \(from RANKFLOW_PROFILE\)"):
        Settings.resolve(environ={"RANKFLOW_PROFILE": "cloud"})
    with pytest.raises(ConfigError, match="unknown key"):
        Settings.resolve(environ={}, file={"hme": "/x"})
    assert issubclass(ConfigError, RankflowError)


def test_a_mistyped_choice_gets_the_nearest_one_and_sources_are_told() -> None:
    with pytest.raises(ConfigError, match=r"\(from RANKFLOW_PROFILE\).*did you mean 'server'\?"):
        Settings.resolve(environ={"RANKFLOW_PROFILE": "sever"})
    sources = setting_sources({"home": "/x"}, environ={"RANKFLOW_REDIS": "r:6379"})
    assert sources["home"] == "argument"
    assert sources["redis_url"] == "RANKFLOW_REDIS"
    assert sources["profile"] == "default"


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


def test_configure_process_gives_prefect_time_to_start_its_temporary_server(
    tmp_path: Path,
) -> None:
    """Prefect's own 20 s startup timeout failed flows on a loaded machine; an explicit
    value (a user's, a deployment's) still wins."""
    import os

    from rankflow.settings import configure_process

    name = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    saved = dict(os.environ)  # configure_process sets process-wide variables: put them back
    try:
        os.environ.pop(name, None)
        configure_process(Settings.resolve(environ={}, home=tmp_path))
        assert float(os.environ[name]) >= 60
        os.environ[name] = "45"
        configure_process(Settings.resolve(environ={}, home=tmp_path))
        assert os.environ[name] == "45"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_configure_process_creates_prefect_home_on_a_fresh_state_dir(tmp_path: Path) -> None:
    """Prefect makes its home on import without parents and warned on a new RANKFLOW_HOME."""
    import os

    from rankflow.settings import configure_process

    home = tmp_path / "new" / "state"
    saved = dict(os.environ)  # configure_process sets process-wide variables: put them back
    try:
        os.environ.pop("PREFECT_HOME", None)
        configure_process(Settings.resolve(environ={}, home=home))
        assert Path(os.environ["PREFECT_HOME"]).is_dir()
        assert Path(os.environ["PREFECT_HOME"]).is_relative_to(home)
    finally:
        os.environ.clear()
        os.environ.update(saved)
