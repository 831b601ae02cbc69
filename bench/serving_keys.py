"""The serving benchmark's requests, drawn from what the online store holds, and the checks
that its requests read stored values (bench/bench_serving.py).

A benchmark of an online store is only one of real lookups when its keys are in the store: ids
drawn from ``1..n`` of the simulator's counts are not (the simulator numbers its entities from
elsewhere), and every stored feature then comes back NOT_FOUND, which is the cheap path. So:

- :func:`stored_keys` takes the state's exports as materialized: the entities with a row of
  every stored view at the as-of time (the rows the online store serves as fresh);
- :func:`draw_bodies` draws seeded ``/score`` bodies from them: a user, then candidates among
  the items of the categories that user has an affinity row for (the request carries no
  category: the service looks up the item's, and the user x category view is keyed by it);
- :func:`found_rates` and :func:`check_found_rates` hold the requests to what they claim: the
  share of each stored feature's values the service found, per feature view, at least 95%;
- :func:`check_scores_differ`: the model's answers vary across candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

# Found in the store: with a value, or a stored null (feast.serving.FieldStatus).
from rankflow.serving.lookup import NULL_VALUE, PRESENT

if TYPE_CHECKING:
    from rankflow.paths import StatePaths

FOUND_FLOOR = 0.95
DEVICES = ("mobile", "desktop", "tablet")
EXPORTS = (
    "user_attributes",
    "item_attributes",
    "user_daily_features",
    "item_daily_features",
    "user_category_daily_features",
)


class BenchKeysError(Exception):
    """The benchmark's requests would not measure the path it claims (keys not stored, all
    scores equal), or the state has no keys to draw from."""


@dataclass(frozen=True)
class StoredKeys:
    """Entities the online store holds fresh rows for, every stored view."""

    users: np.ndarray  # user ids, sorted
    item_category: dict[int, str]  # item id -> its category
    user_categories: dict[int, list[str]]  # user id -> categories with an affinity row


def _at(frame: pd.DataFrame, name: str, as_of: datetime) -> pd.DataFrame:
    if "feature_ts" not in frame.columns:
        raise BenchKeysError(f"export {name!r} has no 'feature_ts' column: {list(frame.columns)}")
    at = frame[pd.to_datetime(frame["feature_ts"], utc=True) == pd.Timestamp(as_of)]
    if at.empty:
        raise BenchKeysError(f"export {name!r} has no row stamped {as_of.isoformat()}")
    return at


def stored_keys(exports: Mapping[str, pd.DataFrame], as_of: datetime) -> StoredKeys:
    """The keys of ``exports`` (name -> frame, the names of :data:`EXPORTS`) whose every view
    has a row: the attribute views' any row, the daily views' row stamped ``as_of`` (the row
    the online store serves, within its one-day TTL of a request that day)."""
    missing = [name for name in EXPORTS if name not in exports]
    if missing:
        raise BenchKeysError(f"exports missing: {missing} (expected all of {list(EXPORTS)})")
    affinity = _at(exports["user_category_daily_features"], "user_category_daily_features", as_of)
    user_ids = (
        set(exports["user_attributes"]["user_id"].astype(int))
        & set(_at(exports["user_daily_features"], "user_daily_features", as_of)["user_id"])
        & set(affinity["user_id"].astype(int))
    )
    daily_items = set(_at(exports["item_daily_features"], "item_daily_features", as_of)["item_id"])
    attributes = exports["item_attributes"].dropna(subset=["item_category"])
    item_category = {
        int(item): str(category)
        for item, category in zip(attributes["item_id"], attributes["item_category"], strict=True)
        if int(item) in daily_items
    }
    held = set(item_category.values())
    user_categories: dict[int, list[str]] = {}
    for user, group in affinity[affinity["user_id"].isin(user_ids)].groupby("user_id"):
        categories = sorted(set(group["category"].astype(str)) & held)
        if categories:
            user_categories[int(user)] = categories
    if not user_categories or not item_category:
        raise BenchKeysError(
            f"no user and item with rows of every view at {as_of.isoformat()}: "
            f"{len(user_categories)} users, {len(item_category)} items"
        )
    return StoredKeys(np.array(sorted(user_categories)), item_category, user_categories)


def read_stored_keys(paths: StatePaths, as_of: datetime) -> StoredKeys:
    """:func:`stored_keys` of a state's exports (the daily ones: the as-of day's file)."""
    from rankflow.features.exports import PER_DAY_EXPORTS, export_path

    frames = {}
    for name in EXPORTS:
        path = export_path(paths, name)
        if name in PER_DAY_EXPORTS:
            path = path / f"{as_of.date().isoformat()}.parquet"
        if not Path(path).exists():
            raise BenchKeysError(f"{path}: missing (export {name!r} as of {as_of.isoformat()})")
        frames[name] = pd.read_parquet(path)
    return stored_keys(frames, as_of)


def draw_bodies(
    rng: np.random.Generator, keys: StoredKeys, size: int, count: int, when: str
) -> list[dict[str, Any]]:
    """``count`` ``/score`` bodies of ``size`` distinct candidates: a user drawn from those
    with at least ``size`` items in their affinity categories, then the candidates from them."""
    by_category: dict[str, list[int]] = {}
    for item, category in sorted(keys.item_category.items()):
        by_category.setdefault(category, []).append(item)
    pools = {
        int(user): [c for c in keys.user_categories[int(user)] if c in by_category]
        for user in keys.users
    }
    eligible = [
        user for user, cats in pools.items() if sum(len(by_category[c]) for c in cats) >= size
    ]
    if not eligible:
        raise BenchKeysError(f"no stored user has {size} items in the categories of its affinity")
    bodies = []
    for _ in range(count):
        user = eligible[int(rng.integers(len(eligible)))]
        pool = np.concatenate([by_category[c] for c in pools[user]])
        items = rng.choice(pool, size=size, replace=False)
        bodies.append(
            {
                "user_id": user,
                "item_ids": [int(i) for i in items],
                "device": DEVICES[int(rng.integers(len(DEVICES)))],
                "time": when,
            }
        )
    return bodies


def found_rates(
    statuses: Iterable[Mapping[str, Sequence[int]]], view_of: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """View -> feature -> the share of its values found in the store (PRESENT, or a stored
    null), over requests' ``statuses`` (feature -> one status per candidate). Only the
    features of ``view_of`` (feature -> view: the stored ones) count."""
    found: dict[str, int] = {}
    total: dict[str, int] = {}
    for request in statuses:
        for name, values in request.items():
            if name in view_of:
                found[name] = found.get(name, 0) + sum(s in (PRESENT, NULL_VALUE) for s in values)
                total[name] = total.get(name, 0) + len(values)
    rates: dict[str, dict[str, float]] = {}
    for name in sorted(view_of):
        rate = found.get(name, 0) / total[name] if total.get(name) else 0.0
        rates.setdefault(view_of[name], {})[name] = rate
    return rates


def check_found_rates(rates: Mapping[str, Mapping[str, float]], floor: float = FOUND_FLOOR) -> None:
    """Raise, naming each view and feature, when a stored feature was found in fewer than
    ``floor`` of the requests' values."""
    low = {
        view: {name: rate for name, rate in features.items() if rate < floor}
        for view, features in rates.items()
    }
    low = {view: features for view, features in low.items() if features}
    if low:
        named = "; ".join(
            f"{view}: " + ", ".join(f"{name} {rate:.1%}" for name, rate in sorted(f.items()))
            for view, f in sorted(low.items())
        )
        raise BenchKeysError(
            f"found rate under {floor:.0%} for known entities, so the benchmark would time the "
            f"missing-entity path: {named}"
        )


def format_found_rates(rates: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per view: its lowest rate and each feature's."""
    lines = []
    for view, features in sorted(rates.items()):
        each = ", ".join(f"{name} {rate:.1%}" for name, rate in features.items())
        lines.append(f"{view}: min {min(features.values()):.1%} ({each})")
    return lines


def check_scores_differ(scores: Sequence[Sequence[float]]) -> None:
    """Raise when a multi-candidate request got one score for all its candidates, or when
    every request got the same scores: the model would not be reading the features."""
    flat = [s for request in scores for s in request]
    if len(set(flat)) < 2:
        raise BenchKeysError(f"every score of {len(scores)} requests is {flat[:1]}")
    same = [i for i, request in enumerate(scores) if len(request) > 1 and len(set(request)) == 1]
    if same:
        raise BenchKeysError(
            f"{len(same)} of {len(scores)} requests scored all their candidates alike "
            f"(first: request {same[0]}, p_click {scores[same[0]][0]})"
        )
