"""The model config: the shipped YAML loads, and mistakes are errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.config import ModelConfigError, load_model_config, parse_model_config
from rankflow.paths import REPO_ROOT
from tests.fixtures.synthetic import CTR_RANKER_V1_SCHEMA, small_model_config

SHIPPED = REPO_ROOT / "configs" / "model.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_declares_every_feature_of_the_service() -> None:
    config = load_model_config(SHIPPED)
    declared = set(config.features.categorical) | set(config.features.numeric)
    assert set(CTR_RANKER_V1_SCHEMA) <= declared
    assert config.features.categorical["item_id"].encoding == "hash"
    assert config.dcn.cross_type == "v2"


def test_typo_names_file_and_dotted_key(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    data["features"]["numeric"]["item_price"]["log1pp"] = True
    data["training"]["lerning_rate"] = 0.1
    path = _write(tmp_path, data)
    with pytest.raises(ModelConfigError) as error:
        load_model_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "features.numeric.item_price.log1pp: unknown key" in message
    assert "training.lerning_rate: unknown key" in message


def test_a_top_level_typo_names_it_without_dumping_the_config(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text())
    data["featurs"] = data.pop("features")
    path = _write(tmp_path, data)
    with pytest.raises(ModelConfigError) as error:
        load_model_config(path)
    message = str(error.value)
    assert "features: required, not given" in message
    assert "featurs: unknown key; did you mean features?" in message
    assert len(message) < 300 and "item_id" not in message


@pytest.mark.parametrize(
    ("categorical", "expected"),
    [
        ({"encoding": "hash"}, "needs 'buckets'"),
        ({"encoding": "vocab", "buckets": 10}, "only used with encoding 'hash'"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_invalid_categorical_declarations(categorical: dict, expected: str) -> None:
    with pytest.raises(ModelConfigError, match=expected):
        parse_model_config({"features": {"categorical": {"user_id": categorical}}})


def test_invalid_values_are_reported_with_their_input() -> None:
    with pytest.raises(ModelConfigError) as error:
        parse_model_config(
            {
                "features": {"numeric": {"x": {"clip": [5, 1]}}},
                "dcn": {"cross_type": "v1", "low_rank": 4},
                "training": {"batch_size": 0},
            }
        )
    message = str(error.value)
    assert "features.numeric.x.clip" in message and "above high" in message
    assert "low_rank applies to cross_type 'v2' only" in message
    assert "training.batch_size" in message


def test_duplicate_cross_names_are_rejected() -> None:
    cross = {"features": ["device", "position"], "buckets": 10}
    with pytest.raises(ModelConfigError, match="duplicate cross names"):
        parse_model_config({"features": {"numeric": {"x": {}}, "crosses": [cross, cross]}})


def test_overrides_are_validated_and_flat_view_is_dotted(tmp_path: Path) -> None:
    config = load_model_config(SHIPPED, {"training.max_epochs": 3})
    assert config.training.max_epochs == 3
    flat = config.flat()
    assert flat["training.max_epochs"] == 3
    assert flat["features.categorical.item_id.buckets"] == 20000
    with pytest.raises(ModelConfigError, match=r"training\.max_epochs"):
        config.with_overrides({"training.max_epochs": -1})
    assert small_model_config({"training.seed": 7}).training.seed == 7


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="not found"):
        load_model_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [unclosed")
    with pytest.raises(ModelConfigError, match="not valid YAML"):
        load_model_config(bad)
