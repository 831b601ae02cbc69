"""Training: learns, is deterministic, stops early, resumes (after kill -9) to the same metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.baseline import train_logistic_regression
from models.checkpoint import (
    BEST_POINTER,
    LAST_POINTER,
    MANIFEST,
    MODEL_FILE,
    CheckpointError,
    load_checkpoint,
    read_pointer,
)
from models.metrics import auc, evaluate
from models.scoring import Scorer
from models.spec import FeatureSpecError
from models.train import RunOptions, train_model
from rankflow.paths import REPO_ROOT
from tests.fixtures.synthetic import make_splits, small_model_config

pytestmark = pytest.mark.usefixtures("private_home")  # tests/conftest.py


@pytest.fixture(scope="module")
def splits():
    return make_splits(3000, seed=11)


def _train(splits, run_dir: Path, kind: str = "dcn", overrides: dict | None = None, **kwargs):
    return train_model(
        kind,
        splits.train,
        splits.valid,
        splits.schema,
        small_model_config(overrides),
        RunOptions(checkpoint_dir=run_dir, **kwargs),
    )


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory: pytest.TempPathFactory):
    """One finished run per kind, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    return {kind: _train(splits, root / kind, kind) for kind in ("wide_deep", "dcn")}


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize("kind", ["wide_deep", "dcn"])
def test_training_learns_and_keeps_the_best_checkpoint(trained, splits, kind: str) -> None:
    result = trained[kind]
    assert result.kind == kind
    assert len(result.history) == 4  # one evaluation per epoch, max_epochs = 4
    assert result.best_metrics["auc"] > 0.65
    assert result.best_metrics["ne"] < 0.97  # better than predicting the base rate
    best = min(result.history, key=lambda h: h["valid_logloss"])
    assert result.best_metrics["logloss"] == pytest.approx(best["valid_logloss"])
    assert result.best_step == int(best["step"])
    # The run folder keeps only the final checkpoint (best weights, finished state).
    assert result.checkpoint_path == result.run_dir / "final"
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        BEST_POINTER,
        LAST_POINTER,
        "final",
    ]
    test_metrics = evaluate(result.model, splits.test, result.spec, truth=splits.truth)
    assert test_metrics["gap_closed_auc"] > 0.3


def test_scorer_from_checkpoint_scores_raw_rows(trained, splits) -> None:
    result = trained["dcn"]
    scorer = Scorer.from_checkpoint(result.run_dir)
    raw = splits.test.drop(columns=["label"]).sample(frac=1.0, axis=1, random_state=0)
    raw["unrelated"] = 1
    probs = scorer.predict_proba(raw)
    assert probs.shape == (len(splits.test),) and probs.dtype == np.float64
    direct = evaluate(result.model, splits.test, result.spec)
    assert evaluate(probs, splits.test)["logloss"] == pytest.approx(direct["logloss"], abs=1e-7)
    with pytest.raises(FeatureSpecError, match="item_price"):
        scorer.predict_proba(raw.drop(columns=["item_price"]))


def test_logistic_regression_baseline(splits) -> None:
    config = small_model_config()
    baseline = train_logistic_regression(splits.train, splits.schema, config)
    probs = baseline.predict_proba(splits.valid)
    assert probs.shape == (len(splits.valid),)
    assert auc(splits.valid["label"].to_numpy(), probs) > 0.65
    crossed = train_logistic_regression(
        splits.train, splits.schema, config.with_overrides({"baseline.use_crosses": True})
    )
    tensors = baseline.spec.transform(splits.valid)
    extra = sum(c.buckets for c in baseline.spec.crosses)
    assert (
        crossed.design_matrix(tensors).shape[1] == baseline.design_matrix(tensors).shape[1] + extra
    )


# -------------------------------------------------------------------------- determinism


def test_same_seed_same_run_other_seed_other_run(trained, splits, tmp_path: Path) -> None:
    first = trained["wide_deep"]
    again = _train(splits, tmp_path / "again", "wide_deep")
    assert again.history == first.history
    assert again.best_metrics == first.best_metrics
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = _train(splits, tmp_path / "other", "wide_deep", seed=7)
    assert other.history != first.history


def test_early_stopping_on_validation_logloss(splits, tmp_path: Path) -> None:
    small = splits.train.iloc[:400]
    result = train_model(
        "dcn",
        small,
        splits.valid,
        splits.schema,
        small_model_config(
            {"training.learning_rate": 0.05, "training.max_epochs": 40, "training.patience": 2}
        ),
        RunOptions(checkpoint_dir=tmp_path / "run"),
    )
    assert result.stopped_early
    assert len(result.history) < 40
    last_three = [h["valid_logloss"] for h in result.history[-2:]]
    assert all(v >= min(h["valid_logloss"] for h in result.history) for v in last_three)
    assert result.best_step < result.best_metrics["steps"]


# ------------------------------------------------------------------------------- resume


def test_finished_run_is_returned_not_retrained(trained, splits) -> None:
    first = trained["dcn"]
    before = (first.checkpoint_path / MANIFEST).read_text()
    again = _train(splits, first.run_dir, "dcn")
    assert again.resumed
    assert again.history == first.history and again.best_metrics == first.best_metrics
    assert (first.checkpoint_path / MANIFEST).read_text() == before


def test_resume_with_a_different_config_or_data_is_refused(splits, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _train(splits, run, "wide_deep", {"training.max_epochs": 1})
    with pytest.raises(CheckpointError) as error:
        _train(splits, run, "wide_deep", {"training.max_epochs": 1, "training.learning_rate": 0.01})
    assert "config training.learning_rate: checkpoint 0.005, now 0.01" in str(error.value)
    with pytest.raises(CheckpointError, match="data: the train/valid rows differ"):
        train_model(
            "wide_deep",
            splits.train.assign(label=splits.train["label"].iloc[::-1].to_numpy()),
            splits.valid,
            splits.schema,
            small_model_config({"training.max_epochs": 1}),
            RunOptions(checkpoint_dir=run),
        )
    with pytest.raises(CheckpointError, match="expected 'dcn'"):
        _train(splits, run, "dcn", {"training.max_epochs": 1})
    fresh = _train(
        splits,
        run,
        "wide_deep",
        {"training.learning_rate": 0.01, "training.max_epochs": 1},
        resume=False,
    )
    assert not fresh.resumed


KILLABLE_TRAINING = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import pandas as pd
    from models.config import load_model_config
    from models.train import RunOptions, train_model

    data, kill_at = Path(sys.argv[1]), int(sys.argv[2])

    def pause_at(step: int, loss: float) -> None:
        if step == kill_at:
            print("AT", step, flush=True)
            time.sleep(600)  # the test kills us here with SIGKILL

    train_model(
        "dcn",
        pd.read_parquet(data / "train.parquet"),
        pd.read_parquet(data / "valid.parquet"),
        json.loads((data / "schema.json").read_text()),
        load_model_config(data / "model.yaml"),
        RunOptions(checkpoint_dir=data / "run", step_callback=pause_at),
    )
    print("FINISHED", flush=True)
    """
)


def _wait_for_line(proc: subprocess.Popen, timeout: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_gives_identical_metrics(splits, tmp_path: Path) -> None:
    import yaml

    # Dropout on, so the resumed run must also restore the RNG stream to match.
    config = small_model_config(
        {"dcn.dropout": 0.2, "training.max_epochs": 3, "training.checkpoint_every_steps": 4}
    )
    splits.train.to_parquet(tmp_path / "train.parquet", index=False)
    splits.valid.to_parquet(tmp_path / "valid.parquet", index=False)
    (tmp_path / "schema.json").write_text(json.dumps(splits.schema))
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "RANKFLOW_HOME": str(tmp_path)}

    # 2100 train rows / batch 256 = 9 steps per epoch; step 14 is mid epoch 2, after the
    # step-12 checkpoint, so two steps are lost and must be replayed identically.
    kill_at = 14
    script = tmp_path / "train_killable.py"
    script.write_text(KILLABLE_TRAINING)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = _wait_for_line(proc, timeout=120)
        assert line.strip() == f"AT {kill_at}", proc.stderr.read() if proc.poll() else line
        proc.kill()  # SIGKILL: no cleanup, no atexit, no finally blocks
        assert proc.wait(timeout=30) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    run = tmp_path / "run"
    last = read_pointer(run, LAST_POINTER)
    assert last is not None and last.name == "ckpt-000000012"
    assert not (run / "final").exists()
    state = json.loads((last / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch"], state["finished"]) == (1, 3, False)

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "train",
            "--kind",
            "dcn",
            "--train",
            str(tmp_path / "train.parquet"),
            "--valid",
            str(tmp_path / "valid.parquet"),
            "--config",
            str(tmp_path / "model.yaml"),
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    after_kill = json.loads((run / "result.json").read_text())
    assert after_kill["resumed"] is True

    uninterrupted = train_model(
        "dcn",
        pd.read_parquet(tmp_path / "train.parquet"),
        pd.read_parquet(tmp_path / "valid.parquet"),
        splits.schema,
        config,
        RunOptions(checkpoint_dir=tmp_path / "reference"),
    )
    assert after_kill["best_metrics"] == uninterrupted.best_metrics
    assert after_kill["history"] == uninterrupted.history
    resumed_model = load_checkpoint(run).model.state_dict()
    for name, tensor in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed_model[name], tensor), name


# ---------------------------------------------------------------------------- checkpoints


def _copy_run(result, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(result.checkpoint_path, target)
    return target


def test_corrupted_checkpoint_names_the_file(trained, tmp_path: Path) -> None:
    ckpt = _copy_run(trained["dcn"], tmp_path)
    weights = ckpt / MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: sha256 differs .*corrupted"):
        load_checkpoint(ckpt)
    weights.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: 100 bytes, .*truncated"):
        Scorer.from_checkpoint(ckpt)
    (ckpt / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{MANIFEST}: unreadable"):
        load_checkpoint(ckpt)
    (ckpt / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(ckpt)


def test_mismatched_checkpoint_names_kind_and_tensors(trained, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a 'dcn' model, expected 'wide_deep'"):
        load_checkpoint(trained["dcn"].run_dir, expect_kind="wide_deep")
    # Weights that do not fit the model their own spec/config build (e.g. an edited file
    # with a regenerated manifest): the error lists the tensors and shapes.
    from models.checkpoint import load_weights
    from models.networks import build_model

    result = trained["dcn"]
    other = build_model("dcn", result.spec, small_model_config({"dcn.num_cross_layers": 3}))
    with pytest.raises(CheckpointError, match=r"missing tensors \['cross.layers.2"):
        load_weights(other, result.checkpoint_path / MODEL_FILE)
    wider = build_model("dcn", result.spec, small_model_config({"dcn.hidden_units": [8, 16]}))
    with pytest.raises(CheckpointError, match=r"mlp.layers.0.weight: file \[32, \d+\], model \[8"):
        load_weights(wider, result.checkpoint_path / MODEL_FILE)
    (tmp_path / BEST_POINTER).write_text("ckpt-000000999\n")
    with pytest.raises(
        CheckpointError, match="points at ckpt-000000999, which is not a checkpoint"
    ):
        load_checkpoint(tmp_path)


def test_cli_reports_config_errors_with_the_key(splits, tmp_path: Path, capsys) -> None:
    from models.cli import main

    bad = tmp_path / "model.yaml"
    bad.write_text("features:\n  categorical: {user_id: {encodng: hash}}\n")
    splits.train.to_parquet(tmp_path / "t.parquet")
    code = main(
        [
            "train",
            "--kind",
            "dcn",
            "--train",
            str(tmp_path / "t.parquet"),
            "--valid",
            str(tmp_path / "t.parquet"),
            "--config",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "features.categorical.user_id.encodng: unknown key" in capsys.readouterr().err
