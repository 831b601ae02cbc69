"""The simulator's hidden world: global effect tables plus users and items that come and go.

Why cohorts: a later ``end_date`` must leave every earlier day byte-identical, so nothing about
an entity may depend on the window. Users (and items) arrive in daily cohorts counted from the
fixed ``ANCHOR_DATE``: cohort k holds ids ``floor(k * rate) + 1 .. floor((k + 1) * rate)`` with
``rate = n / lifetime`` per day, and each cohort draws its members' attributes, signup time and
(exponential) lifetime from its own random stream ``[seed, stream, k]``. Arrivals balance
departures, so about ``n_users`` users and ``n_items`` items are alive on any day, while the
ones who arrive inside the window are the cold-start users and items a model must handle.
A window only materialises the cohorts whose members can be alive in it.

Global effect tables (crosses, position, seasonality, category centroids and price levels) come
from one stream that does not know the window either; the base logit is solved on a pilot
sample of the population of a fixed day (``SimulationConfig.stationary_from``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

import numpy as np

from rankflow.data.contract import DEVICES
from rankflow.sim.config import (
    AGE_BUCKETS,
    AGE_SHARES,
    ANCHOR_DATE,
    CTR_PEAK_HOUR,
    DAY_OF_WEEK_EFFECT,
    DEVICE_PEAK_HOURS,
    DEVICE_SHARES,
    LIFETIME_CAP,
    REGION_SHARES,
    REGIONS,
    SEGMENT_PRICE_SLOPES,
    SEGMENT_SHARES,
    SEGMENTS,
    SimulationConfig,
)
from rankflow.times import day_start_epoch_us as epoch_us

US_PER_HOUR: Final = 3_600_000_000
US_PER_DAY: Final = 24 * US_PER_HOUR
# Stream ids for np.random.default_rng([seed, stream, ...]); never renumber (changes the data).
STREAM_EFFECTS, STREAM_DRIFT, STREAM_PILOT, STREAM_DAY = 0, 1, 2, 3
STREAM_USERS, STREAM_ITEMS, STREAM_USER_DRIFT = 4, 5, 6


def cdf(weights: np.ndarray) -> np.ndarray:
    out = np.cumsum(weights / weights.sum())
    out[-1] = 1.0
    return out


def draw(rng: np.random.Generator, cdf_: np.ndarray, size: int) -> np.ndarray:
    """Categorical draws by inverse CDF: one uniform per draw, O(size log n)."""
    return np.minimum(np.searchsorted(cdf_, rng.random(size), side="right"), len(cdf_) - 1)


@dataclass
class Effects:
    """Window-free global parameters of the click model (and of item generation)."""

    base_logit: float
    position: np.ndarray  # index = position (0 unused)
    hour: np.ndarray
    day_of_week: np.ndarray
    segment_category: np.ndarray
    segment_category_drifted: np.ndarray
    segment_price: np.ndarray
    age_category: np.ndarray  # last row (null age) is zero
    device_hour: np.ndarray
    segment_category_device: np.ndarray
    category_cdf: np.ndarray
    category_log_price: np.ndarray
    centroids: np.ndarray
    log_price_mean: float
    log_price_std: float


@dataclass
class Users:
    """Users alive at some point of a date range; arrays by 0-based index, ids ascending."""

    user_id: np.ndarray
    signup_us: np.ndarray  # epoch microseconds
    signup_day: np.ndarray  # date ordinal of the signup
    last_day: np.ndarray  # ordinal of the last day the user makes requests
    segment: np.ndarray
    age: np.ndarray  # len(AGE_BUCKETS) = null
    region: np.ndarray  # len(REGIONS) = null
    device: np.ndarray  # preferred device
    bias: np.ndarray
    activity: np.ndarray
    taste: np.ndarray
    taste_drifted: np.ndarray
    drifts: np.ndarray


@dataclass
class Items:
    """Items listed at some point of a date range; arrays by 0-based index, ids ascending."""

    item_id: np.ndarray
    created_us: np.ndarray
    created_day: np.ndarray
    last_day: np.ndarray
    category: np.ndarray
    price: np.ndarray
    log_price_z: np.ndarray
    quality: np.ndarray
    popularity: np.ndarray
    vector: np.ndarray


@dataclass
class Truth:
    """Everything the click model needs for a date range: effects, users and items."""

    effects: Effects
    users: Users
    items: Items
    first_day: date
    end_day: date  # exclusive
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        return _index(self.users.user_id, user_ids, "user_id")

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        return _index(self.items.item_id, item_ids, "item_id")


def _index(known: np.ndarray, ids: np.ndarray, name: str) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    position = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    missing = known[position] != ids if len(known) else np.ones(len(ids), dtype=bool)
    if missing.any():
        raise KeyError(f"{name} {ids[missing][:5].tolist()} not in the simulated population")
    return position


# --------------------------------------------------------------------------------------------
# Global effects


def build_effects(cfg: SimulationConfig) -> Effects:
    """Effect tables from the effects stream (base logit 0; ``calibrate`` sets it)."""
    rng = np.random.default_rng([cfg.seed, STREAM_EFFECTS])
    n_seg, n_cat, n_dev = len(SEGMENTS), cfg.n_categories, len(DEVICES)
    hours = np.arange(24)
    position = np.zeros(101)
    position[1:] = -cfg.position_bias_strength * np.log(np.arange(1, 101))
    # Category sizes are skewed (a few big categories, a long tail).
    category_weights = rng.permutation(1.0 / np.arange(1, n_cat + 1) ** 0.6)
    category_log_price = rng.normal(math.log(30.0), 0.8, n_cat)
    shares = category_weights / category_weights.sum()
    mean = float(shares @ category_log_price)
    # Population moments of log price (a per-category level + N(0, 0.5)), so standardising
    # does not depend on which items a window happens to hold.
    std = math.sqrt(0.25 + float(shares @ (category_log_price - mean) ** 2))
    segment_category = rng.normal(0.0, cfg.segment_category_strength, (n_seg, n_cat))
    age_category = np.zeros((len(AGE_BUCKETS) + 1, n_cat))
    age_category[:-1] = rng.normal(0.0, cfg.age_category_strength, (len(AGE_BUCKETS), n_cat))
    peaks = np.array(DEVICE_PEAK_HOURS)[:, None]
    segment_category_device = rng.normal(
        0.0, cfg.segment_category_device_strength, (n_seg, n_cat, n_dev)
    )
    centroids = rng.standard_normal((n_cat, cfg.latent_dim))
    # Drift draws come from their own stream so that switching drift on or off, or changing
    # its strength, leaves everything above (and every day before drift_day) unchanged.
    drift_rng = np.random.default_rng([cfg.seed, STREAM_DRIFT])
    return Effects(
        base_logit=0.0,
        position=position,
        hour=cfg.seasonality_strength * np.cos(2 * np.pi * (hours - CTR_PEAK_HOUR) / 24),
        day_of_week=cfg.seasonality_strength * np.array(DAY_OF_WEEK_EFFECT),
        segment_category=segment_category,
        segment_category_drifted=rotate(
            drift_rng, segment_category, cfg.drift_strength, cfg.segment_category_strength
        ),
        segment_price=cfg.segment_price_strength * np.array(SEGMENT_PRICE_SLOPES),
        age_category=age_category,
        device_hour=cfg.device_hour_strength * np.cos(2 * np.pi * (hours[None, :] - peaks) / 24),
        segment_category_device=segment_category_device,
        category_cdf=cdf(category_weights),
        category_log_price=category_log_price,
        centroids=centroids,
        log_price_mean=mean,
        log_price_std=std,
    )


def rotate(rng: np.random.Generator, values: np.ndarray, strength: float, scale: float):
    """Move ``values`` towards a fresh draw of the same scale, keeping its variance:
    cos(t) * old + sin(t) * new with t = strength * pi / 2."""
    angle = strength * math.pi / 2
    fresh = rng.standard_normal(values.shape) * scale
    return math.cos(angle) * values + math.sin(angle) * fresh


# --------------------------------------------------------------------------------------------
# Cohorts


def _cohort_bounds(lifetime: float, first: date, end: date) -> tuple[int, int]:
    """Range of cohort numbers whose members can be alive in [first, end)."""
    k_first = (first - ANCHOR_DATE).days - int(LIFETIME_CAP * lifetime) - 1
    k_end = (end - ANCHOR_DATE).days
    return max(k_first, 0), max(k_end, 0)


def _cohort_ids(k: int, rate: float) -> np.ndarray:
    return np.arange(math.floor(k * rate) + 1, math.floor((k + 1) * rate) + 1, dtype=np.int64)


def _arrivals(rng: np.random.Generator, k: int, size: int, lifetime: float):
    """Arrival time (epoch us) and last active day (ordinal) of ``size`` members of cohort k."""
    day = ANCHOR_DATE + timedelta(days=k)
    # Within the day, but before 23:00, so a new user's first request fits into the same day.
    arrival = epoch_us(day) + rng.integers(0, 23 * US_PER_HOUR, size)
    life = np.minimum(rng.exponential(lifetime, size), LIFETIME_CAP * lifetime)
    return arrival, np.full(size, day.toordinal()), day.toordinal() + life.astype(np.int64)


@dataclass
class _Cohort:
    k: int
    rng: np.random.Generator
    ids: np.ndarray
    arrival: np.ndarray
    day: np.ndarray
    last: np.ndarray


def _cohorts(
    seed: int, stream: int, n_alive: int, lifetime: float, first: date, end: date
) -> Iterator[_Cohort]:
    """The non-empty cohorts with a member alive in [first, end), each with its own stream
    (arrival and lifetime drawn first, so whether a cohort matters is known before the rest)."""
    rate = n_alive / lifetime
    for k in range(*_cohort_bounds(lifetime, first, end)):
        ids = _cohort_ids(k, rate)
        if not ids.size:
            continue
        rng = np.random.default_rng([seed, stream, k])
        arrival, day, last = _arrivals(rng, k, ids.size, lifetime)
        if last.max() >= first.toordinal():
            yield _Cohort(k, rng, ids, arrival, day, last)


def build_users(cfg: SimulationConfig, first: date, end: date) -> Users:
    """Every user alive on some day of [first, end), from their cohorts' own streams."""
    parts: list[dict[str, np.ndarray]] = []
    seg_cdf, age_cdf = cdf(np.array(SEGMENT_SHARES)), cdf(np.array(AGE_SHARES))
    region_cdf, device_cdf = cdf(np.array(REGION_SHARES)), cdf(np.array(DEVICE_SHARES))
    for c in _cohorts(cfg.seed, STREAM_USERS, cfg.n_users, cfg.user_lifetime_days, first, end):
        k, rng, n = c.k, c.rng, c.ids.size
        age = draw(rng, age_cdf, n)
        age[rng.random(n) < cfg.attribute_null_rate] = len(AGE_BUCKETS)
        region = draw(rng, region_cdf, n)
        region[rng.random(n) < cfg.attribute_null_rate] = len(REGIONS)
        taste = rng.standard_normal((n, cfg.latent_dim))
        part = {
            "user_id": c.ids,
            "signup_us": c.arrival,
            "signup_day": c.day,
            "last_day": c.last,
            "segment": draw(rng, seg_cdf, n),
            "age": age,
            "region": region,
            "device": draw(rng, device_cdf, n),
            "bias": rng.normal(0.0, cfg.user_bias_std, n),
            "activity": rng.lognormal(0.0, cfg.user_activity_sigma, n),
            "taste": taste,
        }
        drift_rng = np.random.default_rng([cfg.seed, STREAM_USER_DRIFT, k])
        drifts = drift_rng.random(n) < cfg.drift_user_share
        rotated = rotate(drift_rng, taste, cfg.drift_strength, 1.0)
        part["taste_drifted"] = np.where(drifts[:, None], rotated, taste)
        part["drifts"] = drifts
        parts.append(part)
    columns = _concat(parts)
    alive = (columns["last_day"] >= first.toordinal()) & (columns["signup_day"] < end.toordinal())
    return Users(**{name: values[alive] for name, values in columns.items()})


def build_items(cfg: SimulationConfig, effects: Effects, first: date, end: date) -> Items:
    """Every item listed on some day of [first, end), from their cohorts' own streams."""
    share = cfg.latent_category_share
    parts: list[dict[str, np.ndarray]] = []
    for c in _cohorts(cfg.seed, STREAM_ITEMS, cfg.n_items, cfg.item_lifetime_days, first, end):
        rng, n = c.rng, c.ids.size
        category = draw(rng, effects.category_cdf, n)
        price = np.maximum(
            np.round(np.exp(rng.normal(effects.category_log_price[category], 0.5)), 2), 0.5
        )
        noise = rng.standard_normal((n, cfg.latent_dim))
        parts.append(
            {
                "item_id": c.ids,
                "created_us": c.arrival,
                "created_day": c.day,
                "last_day": c.last,
                "category": category,
                "price": price,
                "log_price_z": (np.log(price) - effects.log_price_mean) / effects.log_price_std,
                "quality": rng.normal(0.0, cfg.item_quality_std, n),
                # U^-a has a Zipf-like rank curve of slope a: a few items get most exposure.
                "popularity": (1.0 - rng.random(n)) ** -cfg.item_popularity_exponent,
                "vector": math.sqrt(share) * effects.centroids[category]
                + math.sqrt(1 - share) * noise,
            }
        )
    columns = _concat(parts)
    alive = (columns["last_day"] >= first.toordinal()) & (columns["created_day"] < end.toordinal())
    return Items(**{name: values[alive] for name, values in columns.items()})


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if parts:
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    raise ValueError("no entity alive in the simulated range; raise n_users / n_items")


# --------------------------------------------------------------------------------------------
# Who can appear on a day


@dataclass
class DayPool:
    """Candidates of one day: established and new users (by activity), listed items."""

    established: np.ndarray
    established_cdf: np.ndarray
    new: np.ndarray
    new_cdf: np.ndarray
    items: np.ndarray
    items_cdf: np.ndarray


def day_pool(cfg: SimulationConfig, truth: Truth, day: date) -> DayPool:
    """Users alive on ``day`` split by age; items created before ``day`` and still listed
    (an item is shown from the day after it is created, so its attributes precede it)."""
    d = day.toordinal()
    users, items = truth.users, truth.items
    alive = (users.signup_day <= d) & (users.last_day >= d)
    is_new = alive & (users.signup_day > d - cfg.new_user_days)
    established = np.flatnonzero(alive & ~is_new)
    new = np.flatnonzero(is_new)
    listed = np.flatnonzero((items.created_day < d) & (items.last_day >= d))
    if len(listed) < cfg.slots_max or not (len(established) or len(new)):
        raise ValueError(
            f"{day}: {len(listed)} items and {len(established) + len(new)} users alive; "
            f"raise n_items (>= slots_max = {cfg.slots_max}) or n_users"
        )

    def weights(index: np.ndarray, values: np.ndarray) -> np.ndarray:
        return cdf(values[index]) if len(index) else np.ones(0)

    return DayPool(
        established=established,
        established_cdf=weights(established, users.activity),
        new=new,
        new_cdf=weights(new, users.activity),
        items=listed,
        items_cdf=weights(listed, items.popularity),
    )
