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

import rankflow.sim.simulate as simulate_module
from models.metrics import EPS, auc, logloss
from rankflow.data.contract import CONTRACT, arrow_schema
from rankflow.sim.simulate import (
    MARKER_FILE,
    SimulationConfig,
    SimulationSummary,
    load_truth,
    simulate,
    true_logit,
)

END = date(2024, 3, 5)
TINY = {"n_users": 300, "n_items": 100, "n_impressions": 5_000, "days": 4, "end_date": END}


def tiny(**changes: object) -> SimulationConfig:
    return SimulationConfig(**{**TINY, **changes})


def run(root: Path, config: SimulationConfig) -> SimulationSummary:
    return simulate(config, root / "raw", root / "truth")


def impressions(folder: Path) -> pd.DataFrame:
    """All impressions of a raw or truth folder in partition order, with the partition's date
    as a column."""
    frames = []
    for part in sorted((folder / "impressions").iterdir()):
        frame = pd.read_parquet(part / "part-0.parquet")
        frame["partition"] = part.name.split("=")[1]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


truth = impressions  # the truth folder has the same layout (p_click per event)


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
    # n_users / n_items are the population alive on a day; the files hold everyone alive at
    # some point of the window, including those who arrived during it.
    assert 300 <= len(users) <= 400 and users.user_id.is_unique
    assert 100 <= len(items) <= 130 and items.item_id.is_unique
    assert (len(users), len(items)) == (summary.n_users, summary.n_items)
    # A day's count is a function of its date (weekends busier): exact over whole weeks only.
    per_day = [tiny().day_impressions(END - timedelta(days=k)) for k in range(1, 5)]
    assert len(events) == sum(per_day) == summary.n_impressions
    assert abs(len(events) - 5_000) < 0.05 * 5_000
    assert events.event_id.is_unique
    assert events.user_id.isin(users.user_id).all()
    assert events.item_id.isin(items.item_id).all()

    start = pd.Timestamp(END - timedelta(days=4), tz="UTC")
    assert str(events.ts.dt.tz) == "UTC"
    assert (events.ts >= start).all() and (events.ts < pd.Timestamp(END, tz="UTC")).all()
    assert (events.ts.dt.strftime("%Y-%m-%d") == events.partition).all()
    assert (users.signup_ts < pd.Timestamp(END, tz="UTC")).all()
    assert (users.signup_ts >= start).sum() == summary.new_users > 0
    # Nobody acts before signing up; an item is shown from the day after it is listed.
    joined = events.merge(users, on="user_id").merge(items, on="item_id")
    assert (joined.ts > joined.signup_ts).all()
    assert (joined.ts.dt.floor("D") > joined.created_ts).all()
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
    assert len(p) == len(events)
    assert (p.event_id == events.event_id).all() and (p.partition == events.partition).all()
    assert ((p.p_click > 0) & (p.p_click < 1)).all()

    document = json.loads(summary.truth_file.read_text())
    assert document["seed"] == 7
    assert document["config"]["n_impressions"] == 5_000
    assert document["format_version"] == 2
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
    # The base logit is solved for target_ctr on a fixed day's population (so it does not move
    # with the window); 300 users and 100 items, half the days weekends, land near it.
    assert abs(p.p_click.mean() - 0.045) < 0.015
    assert summary.oracle_auc > 0.6
    assert summary.oracle_auc == pytest.approx(roc_auc_score(events.clicked, p.p_click))
    assert summary.oracle_logloss < logloss(events.clicked, np.full(len(p), events.clicked.mean()))


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


def test_oracle_figures_are_the_shared_metrics_over_the_written_truth(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    """The summary's and each day's oracle AUC / log loss are models.metrics over the files
    (one metrics module: the simulator keeps no copy of its own)."""
    root, summary = dataset
    events, p = impressions(root / "raw"), truth(root / "truth")
    y, q = events.clicked.to_numpy(dtype=float), p.p_click.to_numpy(dtype=float)
    assert q.min() > EPS and q.max() < 1 - EPS  # so the log-loss clip changes nothing here
    expected = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert summary.oracle_logloss == pytest.approx(expected, rel=1e-12)
    daily = json.loads(summary.truth_file.read_text())["daily"]
    assert [d["date"] for d in daily] == sorted(events.partition.unique())
    for day in daily:
        on_day = (events.partition == day["date"]).to_numpy()
        assert day["oracle_auc"] == auc(y[on_day], q[on_day])
        assert day["oracle_logloss"] == logloss(y[on_day], q[on_day])
    assert not hasattr(simulate_module, "binary_auc")


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
    assert abs(len(impressions(tmp_path / "raw")) - 1_000) < 50
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


# --------------------------------------------------------------------------------------------
# Appending: a later end_date adds days and leaves the shared ones byte-identical


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.parquet"))
        if "impressions" in p.parts
    }


def test_a_later_end_date_appends_days_and_keeps_shared_days_byte_identical(
    tmp_path: Path, dataset: tuple[Path, SimulationSummary]
) -> None:
    root, _ = dataset
    later = run(tmp_path, tiny(end_date=END + timedelta(days=2)))
    for folder in ("raw", "truth"):
        before, after = _files(root / folder), _files(tmp_path / folder)
        shared = sorted(set(before) & set(after))
        # days is fixed: the two oldest days left the window, two new ones arrived.
        assert len(shared) == 2 and len(before) == len(after) == 4
        assert all(before[name] == after[name] for name in shared)
        dropped = sorted(set(before) - set(after))
        assert all(
            str(END - timedelta(days=4)) in n or str(END - timedelta(days=3)) in n for n in dropped
        )
    # Truth stays aligned with raw: every event id of the new window, and only those.
    events, p = impressions(tmp_path / "raw"), truth(tmp_path / "truth")
    assert set(events.event_id) == set(p.event_id) and len(p) == later.n_impressions
    # Entities are keyed by id, not by the window: a user in both files is the same row.
    users_before = pd.read_parquet(root / "raw" / "users").set_index("user_id")
    users_after = pd.read_parquet(tmp_path / "raw" / "users").set_index("user_id")
    both = users_before.index.intersection(users_after.index)
    assert len(both) > 250
    pd.testing.assert_frame_equal(users_before.loc[both], users_after.loc[both])
    assert users_after.index.max() > users_before.index.max()  # newer signups arrived


# --------------------------------------------------------------------------------------------
# The public truth API (oracles, closed-loop traffic)


def test_true_logit_reproduces_every_written_p_click(
    dataset: tuple[Path, SimulationSummary],
) -> None:
    root, _ = dataset
    events, p = impressions(root / "raw"), truth(root / "truth")
    config = tiny()
    state = load_truth(config)
    logit = true_logit(
        config,
        state,
        events.user_id.to_numpy(),
        events.item_id.to_numpy(),
        events.position.to_numpy(),
        events.ts.dt.hour.to_numpy(),
        events.ts.dt.dayofweek.to_numpy(),
        events.device.to_numpy(),
    )
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), p.p_click.to_numpy(), rtol=1e-12)
    with pytest.raises(KeyError, match="user_id"):
        true_logit(
            config,
            state,
            np.array([10**9]),
            events.item_id[:1].to_numpy(),
            np.array([1]),
            np.array([0]),
            0,
            np.array(["mobile"]),
        )


def test_a_wider_truth_holds_the_same_entities() -> None:
    config = tiny()
    narrow = load_truth(config)
    wide = load_truth(config, END - timedelta(days=10), END + timedelta(days=10))
    assert narrow.effects.base_logit == wide.effects.base_logit
    index = wide.user_index(narrow.users.user_id)
    np.testing.assert_array_equal(wide.users.taste[index], narrow.users.taste)
    np.testing.assert_array_equal(wide.users.signup_us[index], narrow.users.signup_us)
    assert len(wide.users.user_id) > len(narrow.users.user_id)


# --------------------------------------------------------------------------------------------
# Cold start and growth at the default (realistic) settings


def _unseen_test_share(raw: Path, valid_days: int = 3, test_days: int = 3) -> float:
    """Share of test-split rows whose user has no training row (the pipeline's time split)."""
    events = impressions(raw)
    days = sorted(events.partition.unique())
    train = events[events.partition.isin(days[: -(valid_days + test_days)])]
    test = events[events.partition.isin(days[-test_days:])]
    return float((~test.user_id.isin(train.user_id)).mean())


@pytest.mark.slow
def test_default_config_sends_a_realistic_share_of_test_traffic_from_unseen_users(
    tmp_path: Path,
) -> None:
    # The defaults at a fifth of the size (same impressions per user and item).
    scaled = {"n_users": 2_000, "n_items": 400, "n_impressions": 200_000, "end_date": END}
    summary = run(tmp_path / "default", SimulationConfig(**scaled))
    share = _unseen_test_share(summary.raw_dir)
    assert 0.18 <= share <= 0.32, share
    assert abs(summary.positive_rate - 0.045) < 0.006
    assert summary.new_users > 0.1 * summary.n_users and summary.new_items > 0
    # The knob moves it: more traffic from new users, more unseen users at test time.
    more = run(tmp_path / "more", SimulationConfig(**scaled, new_user_traffic_share=0.5))
    none = run(tmp_path / "none", SimulationConfig(**scaled, new_user_traffic_share=0.0))
    assert _unseen_test_share(more.raw_dir) > 0.45
    assert _unseen_test_share(none.raw_dir) < 0.08
