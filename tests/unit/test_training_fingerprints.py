"""Fingerprints: a warm-started model is a different model from a cold-started one."""

from __future__ import annotations

from models.config import load_model_config
from rankflow.paths import REPO_ROOT
from rankflow.training.fingerprints import model_fingerprint


def _config():
    return load_model_config(REPO_ROOT / "configs" / "model.yaml")


def test_warm_source_enters_the_fingerprint_and_cold_start_is_unchanged() -> None:
    config = _config()
    cold = model_fingerprint("dcn", "data", "code", config)
    assert cold == model_fingerprint("dcn", "data", "code", config, None)
    warm_a = model_fingerprint("dcn", "data", "code", config, "champion-a")
    warm_b = model_fingerprint("dcn", "data", "code", config, "champion-b")
    assert len({cold, warm_a, warm_b}) == 3
    assert warm_a == model_fingerprint("dcn", "data", "code", config, "champion-a")


def test_distillation_weight_changes_the_fingerprint() -> None:
    config = _config()
    distilled = config.with_overrides({"warm_start": {"distill_weight": 0.3}})
    assert model_fingerprint("dcn", "d", "c", config, "x") != model_fingerprint(
        "dcn", "d", "c", distilled, "x"
    )
