"""What every canary phase decides on, the simulated one and the live one alike: the CTR
difference between the arms with its variance over users (the unit of randomisation), adjusted
by the users' click rates before the phase (CUPED) when a pre-period is given.

The simulated phase (closed-loop traffic from the simulator) is :mod:`rankflow.sim.canary_phase`;
the live phase over the deployed service's traffic is :mod:`rankflow.canary.live`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankflow.canary.stats import AdjustedDifference, cuped_difference
from rankflow.registry.promotion import CHALLENGER, CHAMPION


def estimate_from_per_user(
    per_user: pd.DataFrame, pre_period: pd.DataFrame | None
) -> AdjustedDifference:
    """``per_user`` (``arm, user_id, sum, count``: clicks and views per user and arm) -> the
    challenger - champion CTR difference with its variance over users, CUPED-adjusted by
    ``pre_period`` (``user_id, pre_clicks, pre_views``) when given. Shared by the simulated
    and the live phase, so both decide on the same estimate."""
    if pre_period is not None and not pre_period.empty:
        per_user = per_user.merge(pre_period, on="user_id", how="left")
    else:
        per_user = per_user.assign(pre_clicks=0.0, pre_views=0.0)
    per_user[["pre_clicks", "pre_views"]] = per_user[["pre_clicks", "pre_views"]].fillna(0.0)
    arms = []
    for arm in (CHAMPION, CHALLENGER):
        rows = per_user[per_user["arm"] == arm]
        if rows.empty:
            return AdjustedDifference(float("nan"), float("inf"), 0.0, float("inf"))
        arms.append(
            tuple(rows[c].to_numpy(np.float64) for c in ("sum", "count", "pre_clicks", "pre_views"))
        )
    return cuped_difference(arms[0], arms[1])


def pre_period_from(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-user clicks and views before the canary (``user_id, pre_clicks, pre_views``), from
    labelled impressions (``user_id``, ``label``) such as the splits of the fresh window."""
    rows = pd.concat([f[["user_id", "label"]] for f in frames], ignore_index=True)
    grouped = rows.groupby("user_id")["label"].agg(["sum", "count"]).reset_index()
    return grouped.rename(columns={"sum": "pre_clicks", "count": "pre_views"}).astype(
        {"user_id": np.int64, "pre_clicks": np.float64, "pre_views": np.float64}
    )
