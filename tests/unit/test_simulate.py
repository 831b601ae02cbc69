"""The click-log simulator: layout, determinism, ground truth, drift, safe replacement."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

import rankflow.data.simulate as simulate_module
from rankflow.data.contract import CONTRACT, arrow_schema
from rankflow.data.simulate import (
    MARKER_FILE,
    SimulationConfig,
    SimulationSummary,
    binary_auc,
    binary_logloss,
    simulate,
)

END = date(2024, 3, 5)
TINY = {"n_users": 300, "n_items": 100, "n_impressions": 5_000, "days": 4, "end_date": END}


def tiny(**changes: object) -> SimulationConfig:
    return SimulationConfig(**{**TINY, **changes})


def run(root: Path, config: SimulationConfig) -> SimulationSummary:
    return simulate(config, root / "raw", root / "truth")


def impressions(raw: Path) -> pd.DataFrame:
    """All impressions in partition order, with the partition's date as a column."""
    frames = []
    for part in sorted((raw / "impressions").iterdir()):
        frame = pd.read_parquet(part / "part-0.parquet")
        frame["partition"] = part.name.split("=")[1]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def truth(truth_dir: Path) -> pd.DataFrame:
    frames = []
    for part in sorted((truth_dir / "impressions").iterdir()):
        frame = pd.read_parquet(part / "part-0.parquet")
        frame["partition"] = part.name.split("=")[1]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary]:
    root = tmp_path_factory.mktemp("sim")
    return root, run(root, tiny())


# --------------------------------------------------------------------------------------------
# Config


def test_config_typo_is_an_error_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="typo"):
        SimulationConfig(typo=1)


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValidationError, match="drift_day"):
        tiny(drift_day=4)
    with pytest.raises(ValidationError, match="slots_min"):
        tiny(slots_min=8, slots_max=5)
    with pytest.raises(ValidationError, match="n_items"):
        tiny(n_items=5, slots_max=10)


def test_default_end_date_is_today_utc_so_nothing_lies_in_the_future() -> None:
    config = SimulationConfig()
    assert config.resolved_end_date() == datetime.now(UTC).date()
    assert config.resolved_start_date() == config.resolved_end_date() - timedelta(days=30)


# --------------------------------------------------------------------------------------------
# Layout, sizes, types


def test_writes_the_contract_layout_with_contract_types(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    root, _ = dataset
    raw = root / "raw"
    assert pq.read_schema(raw / "users" / "users.parquet").equals(arrow_schema("users"))
    assert pq.read_schema(raw / "items" / "items.parquet").equals(arrow_schema("items"))
    days = [END - timedelta(days=k) for k in range(4, 0, -1)]
    partitions = sorted(p.name for p in (raw / "impressions").iterdir())
    assert partitions == [f"event_date={d}" for d in days]
    for name in partitions:
        files = list((raw / "impressions" / name).iterdir())
        assert [f.name for f in files] == ["part-0.parquet"]
        assert pq.read_schema(files[0]).equals(arrow_schema("impressions"))
    assert set(CONTRACT["impressions"]) == set(arrow_schema("impressions").names)


def test_sizes_ids_and_date_range(dataset: tuple[Path, SimulationSummary]) -> None:
    root, summary = dataset
    users = pd.read_parquet(root / "raw" / "users")
    items = pd.read_parquet(root / "raw" / "items")
    events = impressions(root / "raw")
    assert len(users) == 300 and users.user_id.is_unique
    assert len(items) == 100 and items.item_id.is_unique
    assert len(events) == 5_000 == summary.n_impressions
    assert events.event_id.is_unique
    assert events.user_id.isin(users.user_id).all()
    assert events.item_id.isin(items.item_id).all()

    start = pd.Timestamp(END - timedelta(days=4), tz="UTC")
    assert str(events.ts.dt.tz) == "UTC"
    assert (events.ts >= start).all() and (events.ts < pd.Timestamp(END, tz="UTC")).all()
    assert (events.ts.dt.strftime("%Y-%m-%d") == events.partition).all()
    assert (users.signup_ts < start).all() and (items.created_ts < start).all()
    assert (summary.start_date, summary.end_date) == (END - timedelta(days=4), END)

    assert set(events.device) <= {"mobile", "desktop", "tablet"}
    assert set(events.clicked) <= {0, 1}
    assert (items.price >= 0).all()
    assert users.segment.notna().all() and items.category.notna().all()


def test_requests_have_slots_one_to_k_distinct_items_one_user_and_time(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    root, summary = dataset
    events = impressions(root / "raw")
    grouped = events.groupby("request_id")
    assert summary.n_requests == grouped.ngroups
    sizes = grouped.size()
    assert sizes.max() <= 10
    assert (grouped.position.max() == sizes).all() and (grouped.position.min() == 1).all()
    assert (grouped.item_id.nunique() == sizes).all()
    assert (grouped[["user_id", "ts", "device"]].nunique() == 1).all().all()
    assert (events.groupby("partition").ts.apply(lambda ts: ts.is_monotonic_increasing)).all()


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_data_and_summary(
    tmp_path: Path, dataset: tuple[Path, SimulationSummary]
) -> None:
    root, summary = dataset
    again = run(tmp_path, tiny())
    assert again == replace(
        summary, raw_dir=again.raw_dir, truth_dir=again.truth_dir, truth_file=again.truth_file
    )
    for relative in ("raw/users", "raw/items", "truth/users.parquet", "truth/items.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(root / relative), pd.read_parquet(tmp_path / relative)
        )
    pd.testing.assert_frame_equal(impressions(root / "raw"), impressions(tmp_path / "raw"))
    pd.testing.assert_frame_equal(truth(root / "truth"), truth(tmp_path / "truth"))
    first = json.loads((root / "truth" / "simulation.json").read_text())
    second = json.loads((tmp_path / "truth" / "simulation.json").read_text())
    assert first == second


def test_different_seed_gives_different_data(
    tmp_path: Path, dataset: tuple[Path, SimulationSummary]
) -> None:
    root, _ = dataset
    run(tmp_path, tiny(seed=8))
    before, after = impressions(root / "raw"), impressions(tmp_path / "raw")
    assert len(before) == len(after)
    assert (before.user_id != after.user_id).mean() > 0.5
    assert not pd.read_parquet(root / "raw" / "users").equals(
        pd.read_parquet(tmp_path / "raw" / "users")
    )


# --------------------------------------------------------------------------------------------
# Ground truth


def test_truth_is_separate_from_raw_and_aligned_by_event_id(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    root, summary = dataset
    events, p = impressions(root / "raw"), truth(root / "truth")
    assert list(p.columns) == ["event_id", "p_click", "partition"]
    assert "p_click" not in events.columns
    assert not any((root / "raw").rglob("simulation.json"))
    assert (p.event_id == events.event_id).all() and (p.partition == events.partition).all()
    assert ((p.p_click > 0) & (p.p_click < 1)).all()

    document = json.loads(summary.truth_file.read_text())
    assert document["seed"] == 7
    assert document["config"]["n_impressions"] == 5_000
    assert document["summary"]["oracle_auc"] == summary.oracle_auc
    assert len(document["daily"]) == 4
    assert np.array(document["truth"]["effects"]["segment_category"]).shape == (5, 20)
    position = document["truth"]["effects"]["position"]
    assert position == sorted(position, reverse=True)  # decreasing in position


def test_ctr_is_near_target_and_oracle_beats_chance(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    root, summary = dataset
    events, p = impressions(root / "raw"), truth(root / "truth")
    assert 0.03 <= summary.positive_rate <= 0.06
    assert summary.n_clicks == events.clicked.sum()
    assert abs(p.p_click.mean() - 0.045) < 0.01  # the base logit was solved for target_ctr
    assert summary.oracle_auc > 0.6
    assert summary.oracle_auc == pytest.approx(roc_auc_score(events.clicked, p.p_click))
    assert summary.oracle_logloss < binary_logloss(
        events.clicked, np.full(len(p), events.clicked.mean())
    )


def test_clicks_follow_position_bias(tmp_path: Path) -> None:
    summary = run(tmp_path, tiny(n_impressions=40_000, days=2, position_bias_strength=1.0))
    events = impressions(summary.raw_dir)
    ctr = events.groupby("position").clicked.mean()
    assert ctr[1] > ctr[3] > ctr[8]


def test_drift_changes_truth_from_drift_day_only(
    tmp_path: Path, dataset: tuple[Path, SimulationSummary]
) -> None:
    root, _ = dataset
    run(tmp_path, tiny(drift_day=2, drift_strength=0.8))
    stable, drifting = truth(root / "truth"), truth(tmp_path / "truth")
    days = sorted(stable.partition.unique())
    before = stable.partition.isin(days[:2])
    np.testing.assert_array_equal(stable.p_click[before], drifting.p_click[before])
    assert (stable.event_id == drifting.event_id).all()
    changed = stable.p_click[~before].to_numpy() != drifting.p_click[~before].to_numpy()
    assert changed.mean() > 0.9
    # The drifted truth keeps its scale: same CTR ballpark, different ranking of pairs.
    assert abs(stable.p_click[~before].mean() - drifting.p_click[~before].mean()) < 0.02


def test_metric_helpers_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(2_000) < 0.1
    scores = np.round(rng.random(2_000) + labels * 0.3, 1)  # many ties
    assert binary_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(binary_auc(np.zeros(5), np.arange(5)))
    assert binary_logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


# --------------------------------------------------------------------------------------------
# Replacing a previous simulation


def test_rerun_replaces_previous_simulation_cleanly(tmp_path: Path) -> None:
    run(tmp_path, tiny())
    run(tmp_path, tiny(days=2, n_impressions=1_000, seed=3))
    partitions = sorted(p.name for p in (tmp_path / "raw" / "impressions").iterdir())
    assert partitions == [
        f"event_date={END - timedelta(days=2)}",
        f"event_date={END - timedelta(days=1)}",
    ]
    assert len(list((tmp_path / "truth" / "impressions").iterdir())) == 2
    assert len(impressions(tmp_path / "raw")) == 1_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "truth"]  # no staging left over


def test_a_crash_leaves_the_previous_dataset_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run(tmp_path, tiny())
    before = impressions(first.raw_dir)
    real_write_day = simulate_module._write_day

    def crash_on_third_day(*args: object, **kwargs: object) -> object:
        if args[2] == 2:
            raise RuntimeError("disk full")
        return real_write_day(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "_write_day", crash_on_third_day)
    with pytest.raises(RuntimeError, match="disk full"):
        run(tmp_path, tiny(seed=99))
    pd.testing.assert_frame_equal(impressions(tmp_path / "raw"), before)
    assert json.loads((tmp_path / "truth" / "simulation.json").read_text())["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "truth"]


def test_refuses_to_replace_data_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "raw" / "users" / "mine.parquet"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=MARKER_FILE):
        run(tmp_path, tiny())
    assert foreign.read_bytes() == b"precious"


def test_raw_and_truth_must_be_separate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="separate"):
        simulate(tiny(), tmp_path / "raw", tmp_path / "raw" / "truth")
