"""A logged model scores in a fresh process that cannot import rankflow (only the lock + the model).

Real training on a small synthetic training set, a real MLflow SQLite store in a temporary
state home, and ``mlflow.pyfunc.load_model`` in a child Python started isolated (``-I``: no
PYTHONPATH), from another folder, with an import hook that makes ``import rankflow`` fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.scoring import Scorer
from models.synthetic import make_splits, small_model_config
from rankflow.config import parse_config
from rankflow.features.training_set import DateWindow, TrainingSet
from rankflow.settings import Settings
from rankflow.training.outcome import TrainOutcome
from rankflow.training.step import train_and_register

pytestmark = pytest.mark.integration

EVAL_BATCH = 97  # not the default: the scorer must take it from the checkpoint's config
GATES = {
    "min_auc": 0.6,
    "max_ne": 1.0,
    "max_ece": 0.1,
    "calibration_ratio": [0.5, 2.0],
    "min_auc_lift_over_baseline": None,
}

_SCORE = """
import importlib.abc, json, sys

class NoRankflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rankflow" or name.startswith(("rankflow.", "flows")):
            raise ImportError(f"scoring tried to import {name}")
        return None

sys.meta_path.insert(0, NoRankflow())

import mlflow
import pandas as pd

mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
p = model.predict(pd.read_parquet(sys.argv[3]))
import models
print(json.dumps({
    "p": [float(x) for x in p],
    "type": type(p).__name__,
    "models": models.__file__,
    "rankflow_loaded": any(m == "rankflow" or m.startswith("rankflow.") for m in sys.modules),
    "batch": model.unwrap_python_model().scorer.batch_size,
}))
"""


def _window(*frames: Any) -> DateWindow:
    days = [d for f in frames for d in (f["event_timestamp"].min(), f["event_timestamp"].max())]
    return DateWindow(min(days).date(), max(days).date())


@dataclass
class Logged:
    home: Path
    outcome: TrainOutcome
    training_set: TrainingSet


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    home = tmp_path_factory.mktemp("pyfunc-home")
    splits = make_splits(4000, seed=5)
    ts = TrainingSet(
        train=splits.train.reset_index(drop=True),
        valid=splits.valid.reset_index(drop=True),
        test=splits.test.reset_index(drop=True),
        feature_service="ctr_ranker_v1",
        feature_names=list(splits.schema),
        feature_types=dict(splits.schema),
        window=_window(splits.train, splits.test),
        split_windows={
            "train": _window(splits.train),
            "valid": _window(splits.valid),
            "test": _window(splits.test),
        },
    )
    settings = Settings.resolve(home=home, environ={})  # the embedded store under home
    outcome = train_and_register(
        parse_config({"registry": {"gates": GATES}}),
        settings.paths,
        training_set=ts,
        model_config=small_model_config(
            {"training.max_epochs": 1, "training.eval_batch_size": EVAL_BATCH}
        ),
        settings=settings,
    )
    assert outcome.champion_version is not None, outcome.decision
    yield Logged(home, outcome, ts)


def test_a_logged_model_scores_in_a_fresh_process_without_rankflow(
    logged: Logged, tmp_path: Path
) -> None:
    outcome = logged.outcome
    champion = outcome.candidates[outcome.champion["kind"]]  # type: ignore[index]
    assert champion.checkpoint_path is not None
    frame = logged.training_set.test.head(200).reset_index(drop=True)
    frame.loc[0, "user_ctr_7d"] = np.nan  # a new user's missing stat
    rows = tmp_path / "rows.parquet"
    frame.to_parquet(rows)
    expected = Scorer.from_checkpoint(champion.checkpoint_path).predict_proba(frame)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "score.py"
    script.write_text(_SCORE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-I", str(script), outcome.tracking_uri, outcome.champion_uri, str(rows)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["type"] == "ndarray"
    np.testing.assert_allclose(answer["p"], expected, rtol=1e-6, atol=1e-9)
    assert answer["rankflow_loaded"] is False
    # models came from the logged model's code, not from the checkout.
    artifacts = str((logged.home / "mlflow" / "artifacts").resolve())
    assert answer["models"].startswith(artifacts), answer["models"]
    assert answer["batch"] == EVAL_BATCH


def test_the_logged_code_is_the_models_package_and_the_wrapper_only(logged: Logged) -> None:
    import mlflow

    mlflow.set_tracking_uri(logged.outcome.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(logged.outcome.champion_uri))
    assert sorted(p.name for p in (local / "code").iterdir()) == ["models"]
    # The wrapper is the model-from-code file, and imports nothing of rankflow.
    (model_code,) = [p for p in local.rglob("*.py") if "code" not in p.relative_to(local).parts]
    source = model_code.read_text()
    assert "class RankflowCTRModel" in source and "set_model(RankflowCTRModel())" in source
    assert "import rankflow" not in source and "from rankflow" not in source
