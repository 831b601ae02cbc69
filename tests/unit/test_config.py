"""The pipeline config: the shipped YAML is valid, typos name their key, overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankflow.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from rankflow.paths import StatePaths


def test_shipped_config_loads_with_the_documented_defaults() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.source == "simulate"
    assert config.simulation.n_impressions == 1_000_000
    assert config.training_set.test_days == 3
    assert config.resolved_model_config_path().is_file()


def test_unknown_nested_key_names_the_dotted_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("simulation:\n  n_userz: 10\nwarehouse:\n  ctr_prior: 2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "simulation.n_userz: unknown key" in message
    assert "warehouse.ctr_prior" in message  # every problem at once, not just the first


def test_dotted_overrides_apply_and_are_validated() -> None:
    config = load_config(overrides={"simulation.days": 9, "source": "raw"})
    assert config.simulation.days == 9
    assert config.source == "raw"
    with pytest.raises(ConfigError, match=r"simulation\.days"):
        load_config(overrides={"simulation.days": 0})


def test_flat_view_has_dotted_keys_for_run_parameters() -> None:
    flat = load_config().flat()
    assert flat["simulation.seed"] == 7
    assert flat["warehouse.lookback_days"] == 1
    assert all(not isinstance(v, dict) for v in flat.values())


def test_raw_dir_defaults_to_the_state_dir(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    assert load_config().resolved_raw_dir(paths) == tmp_path / "raw"
    custom = load_config(overrides={"raw_dir": str(tmp_path / "mine")})
    assert custom.resolved_raw_dir(paths) == tmp_path / "mine"


def test_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_one_feature_service_reaches_training_and_serving_alike() -> None:
    config = load_config(overrides={"feature_service": "ctr_ranker_v2"})
    assert config.train_step().feature_service == "ctr_ranker_v2"
    assert config.scoring().feature_service == "ctr_ranker_v2"
    assert config.canary_run().train.feature_service == "ctr_ranker_v2"
    assert config.canary_run().scoring.feature_service == "ctr_ranker_v2"
    assert load_config(DEFAULT_CONFIG_PATH).feature_service == "ctr_ranker_v1"
    # Serving has no feature service of its own to disagree with training's.
    with pytest.raises(ConfigError, match=r"serving\.feature_service: unknown key"):
        load_config(overrides={"serving.feature_service": "ctr_ranker_v2"})


def test_each_stage_gets_the_sections_it_reads() -> None:
    config = load_config(
        overrides={"registry.serving_model": "my-ctr", "tracking.experiment": "exp"}
    )
    scoring, train = config.scoring(), config.train_step()
    assert scoring.model_name == train.registry.serving_model == "my-ctr"
    assert scoring.serving is config.serving and scoring.tracking is config.tracking
    assert train.split is config.training_set and train.registry is config.registry
    assert train.model_config_path == config.resolved_model_config_path()
    assert train.ctr_prior == config.warehouse.ctr_prior
    # The pipeline config as plain data: what every training run logs.
    assert train.pipeline["tracking"]["experiment"] == "exp"
    assert train.pipeline["simulation"]["seed"] == config.simulation.seed


def test_a_mistyped_key_gets_the_nearest_valid_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("sourc: raw\nsimulation:\n  n_userz: 10\ncanary:\n  online:\n    alfa: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert "sourc: unknown key; did you mean source?" in message
    assert "simulation.n_userz: unknown key; did you mean simulation.n_users?" in message
    assert "canary.online.alfa: unknown key; did you mean canary.online.alpha?" in message


def test_an_unknown_key_with_no_near_match_lists_the_sections_keys() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides={"warehouse.zzz": 1})
    assert "warehouse.zzz: unknown key (expected one of ctr_prior," in str(error.value)


def test_an_override_error_names_the_override_not_the_file() -> None:
    """The shipped file is valid: a bad --set is the override's fault, and said so."""
    with pytest.raises(ConfigError) as error:
        load_config(DEFAULT_CONFIG_PATH, {"simulation.dayz": 3})
    message = str(error.value)
    assert message.splitlines()[0] == "invalid configuration from --set simulation.dayz"
    assert str(DEFAULT_CONFIG_PATH) not in message
    assert "did you mean simulation.days?" in message


def test_a_file_error_beside_an_override_error_says_which_is_which(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sourc: raw\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, {"simulation.days": 0}, {"simulation.days": "--days"})
    first, *lines = str(error.value).splitlines()
    assert first == f"{path}: invalid configuration"
    assert any(line.startswith("  simulation.days:") and "(from --days)" in line for line in lines)
    assert any(line.startswith("  sourc:") and "(from" not in line for line in lines)


def test_a_sections_own_check_prints_its_reason_not_the_whole_section() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(overrides={"simulation.drift_day": 500})
    message = str(error.value)
    assert "drift_day (500) must be < days" in message
    assert "n_users" not in message and "{" not in message  # the section's dict is not dumped
    assert "from --set simulation.drift_day" in message  # the key inside it that was set
