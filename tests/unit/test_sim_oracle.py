"""The oracle rebuilds the simulator's truth: a simulated day comes back row for row, and any
row's true probability matches what the simulator wrote."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from rankflow.sim.oracle import Oracle, OracleError
from rankflow.sim.simulate import SimulationConfig, simulate

CONFIG = SimulationConfig(
    seed=3,
    n_users=300,
    n_items=120,
    n_categories=6,
    n_impressions=6000,
    days=6,
    end_date=date(2026, 3, 10),
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("oracle")
    simulate(CONFIG, root / "raw", root / "truth")
    truth = pd.read_parquet(root / "truth" / "impressions")
    raw = pd.read_parquet(root / "raw" / "impressions")
    return root, raw.merge(truth[["event_id", "p_click"]], on="event_id")


def test_a_simulated_day_is_reproduced_row_for_row(written) -> None:
    root, rows = written
    oracle = Oracle.from_truth_dir(root / "truth")
    day = date(2026, 3, 8)
    traffic = oracle.day_traffic(day).frame
    stamp = pd.Timestamp(day, tz="UTC")
    on_day = rows[(rows["ts"] >= stamp) & (rows["ts"] < stamp + pd.Timedelta(days=1))]
    assert len(traffic) == len(on_day)
    np.testing.assert_array_equal(traffic["user_id"].to_numpy(), on_day["user_id"].to_numpy())
    np.testing.assert_array_equal(traffic["item_id"].to_numpy(), on_day["item_id"].to_numpy())
    np.testing.assert_allclose(traffic["p_click"].to_numpy(), on_day["p_click"].to_numpy())
    np.testing.assert_array_equal(traffic["clicked"].to_numpy(), on_day["clicked"].to_numpy())


def test_p_click_of_logged_rows_matches_the_truth_and_unknown_ids_are_refused(written) -> None:
    root, rows = written
    oracle = Oracle.from_truth_dir(root / "truth")
    sample = rows.iloc[:50]
    for _, row in sample.iterrows():
        when = pd.Timestamp(row["ts"]).to_pydatetime()
        p = oracle.p_click(
            np.array([row["user_id"]]),
            np.array([row["item_id"]]),
            np.array([row["position"]]),
            np.array([row["device"]], dtype=object),
            when,
        )
        assert p[0] == pytest.approx(row["p_click"], rel=1e-9)
    with pytest.raises(OracleError, match="not a simulated entity"):
        oracle.p_click(
            np.array([-5]),
            np.array([rows["item_id"].iloc[0]]),
            np.array([1]),
            np.array(["mobile"], dtype=object),
            datetime(2026, 3, 8, 12, tzinfo=UTC),
        )


def test_the_day_after_the_data_has_traffic(written) -> None:
    root, _ = written
    oracle = Oracle.from_truth_dir(root / "truth")
    next_day = oracle.day_traffic()
    assert next_day.day == date(2026, 3, 10)
    assert len(next_day.frame) == CONFIG.day_impressions(date(2026, 3, 10))
    assert next_day.frame["p_click"].between(0, 1).all()
