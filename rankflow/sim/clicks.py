"""The simulator's requests and click model; ``load_truth`` / ``true_logit`` are the public
entry points for anyone who needs true click probabilities (the oracle, the closed loop).

    logit = base + user_bias[u] + item_quality[i] + position[pos] + hour[h] + day_of_week[d]
            + segment_category[s, c] + segment_price[s] * log_price_z[i] + age_category[a, c]
            + device_hour[dev, h] + segment_category_device[s, c, dev]
            + latent_strength * taste[u] . item_vector[i] / sqrt(latent_dim)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np

from rankflow.data.contract import DEVICES
from rankflow.sim.config import SimulationConfig
from rankflow.sim.population import (
    STREAM_PILOT,
    US_PER_HOUR,
    DayPool,
    Effects,
    Truth,
    build_effects,
    build_items,
    build_users,
    cdf,
    day_pool,
    draw,
    epoch_us,
)

_PILOT_IMPRESSIONS: Final = 70_000


def load_truth(cfg: SimulationConfig, first: date | None = None, end: date | None = None) -> Truth:
    """The hidden truth for days [first, end) (default: the config's window): effect tables,
    solved base logit, and every user and item alive in that range. Equal ranges give equal
    truths; a wider range holds the same entities plus more."""
    first = first or cfg.resolved_start_date()
    end = end or cfg.resolved_end_date()
    effects = build_effects(cfg)
    effects.base_logit = _calibrate_base(cfg, effects)
    users, items = build_users(cfg, first, end), build_items(cfg, effects, first, end)
    return Truth(effects=effects, users=users, items=items, first_day=first, end_day=end)


def true_logit(
    cfg: SimulationConfig,
    truth: Truth,
    users: np.ndarray,
    items: np.ndarray,
    positions: np.ndarray,
    hours: np.ndarray,
    day_of_week: np.ndarray | int,
    devices: np.ndarray,
    drifted: bool | np.ndarray = False,
) -> np.ndarray:
    """True logit of arbitrary rows: ``users`` / ``items`` are ids (KeyError naming an id not
    in ``truth``), ``devices`` names (``mobile``...) or codes, ``day_of_week`` 0 = Monday.
    ``drifted``: use the post-drift truth (per row or for all)."""
    devices = np.asarray(devices)
    if devices.dtype.kind in "OUS":
        codes = {name: k for k, name in enumerate(DEVICES)}
        devices = np.array([codes[str(d)] for d in devices], dtype=np.int64)
    rows = _Requests(
        offset_us=np.zeros(0, np.int64),
        request=np.zeros(0, np.int64),
        n_requests=0,
        user=truth.user_index(users),
        item=truth.item_index(items),
        position=np.asarray(positions, dtype=np.int64),
        device=devices.astype(np.int64),
        hour=np.asarray(hours, dtype=np.int64),
    )
    return _logit(cfg, truth, rows, day_of_week, drifted=drifted)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _Requests:
    """One day's (or the pilot's) impressions before they get labels; user / item are 0-based
    indices into ``truth.users`` / ``truth.items``."""

    offset_us: np.ndarray  # per impression, microseconds since the day's midnight
    request: np.ndarray  # per impression, 0-based request index in time order
    n_requests: int
    user: np.ndarray
    item: np.ndarray
    position: np.ndarray
    device: np.ndarray
    hour: np.ndarray


def _logit(
    cfg: SimulationConfig,
    truth: Truth,
    r: _Requests,
    day_of_week: int | np.ndarray,
    *,
    drifted: bool | np.ndarray,
) -> np.ndarray:
    e, users, items = truth.effects, truth.users, truth.items
    seg = users.segment[r.user]
    cat = items.category[r.item]
    drifted = np.broadcast_to(np.asarray(drifted, dtype=bool), r.user.shape)
    segment_category = np.where(
        drifted, e.segment_category_drifted[seg, cat], e.segment_category[seg, cat]
    )
    taste = np.where(drifted[:, None], users.taste_drifted[r.user], users.taste[r.user])
    latent = np.einsum("ij,ij->i", taste, items.vector[r.item]) / math.sqrt(cfg.latent_dim)
    return (
        e.base_logit
        + users.bias[r.user]
        + items.quality[r.item]
        + e.position[r.position]
        + e.hour[r.hour]
        + e.day_of_week[day_of_week]
        + segment_category
        + e.segment_price[seg] * items.log_price_z[r.item]
        + e.age_category[users.age[r.user], cat]
        + e.device_hour[r.device, r.hour]
        + e.segment_category_device[seg, cat, r.device]
        + cfg.latent_strength * latent
    )


def _calibrate_base(cfg: SimulationConfig, effects: Effects) -> float:
    """Solve the base logit so the mean true probability of a pilot sample equals target_ctr.
    The pilot population is that of a fixed day, so the base never depends on the window."""
    day = cfg.stationary_from()
    pilot = Truth(
        effects=effects,
        users=build_users(cfg, day, day + timedelta(days=1)),
        items=build_items(cfg, effects, day, day + timedelta(days=1)),
        first_day=day,
        end_day=day + timedelta(days=1),
    )
    pool = day_pool(cfg, pilot, day)
    rng = np.random.default_rng([cfg.seed, STREAM_PILOT])
    per_day = max(_PILOT_IMPRESSIONS // 7, cfg.slots_max)
    logits = [
        _logit(
            cfg,
            pilot,
            draw_requests(cfg, pilot, pool, rng, per_day, epoch_us(day)),
            dow,
            drifted=False,
        )
        for dow in range(7)
    ]
    z = np.concatenate(logits)
    low, high = -20.0, 20.0
    for _ in range(60):  # bisection: mean sigmoid is monotone in the base
        mid = (low + high) / 2
        if sigmoid(z + mid).mean() < cfg.target_ctr:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def traffic_by_hour() -> np.ndarray:
    """Share of requests per UTC hour: a night trough, a lunch bump and an evening peak."""
    hours = np.arange(24)

    def bump(center: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(hours - center), 24 - np.abs(hours - center))
        return np.exp(-((distance / width) ** 2))

    weights = 0.15 + bump(20.5, 3.5) + 0.6 * bump(12.5, 2.5)
    return weights / weights.sum()


_HOUR_CDF: Final = cdf(traffic_by_hour())


def _pick(rng: np.random.Generator, members: np.ndarray, cdf_: np.ndarray, size: int):
    """Weighted members (0 if there are none); always one uniform per draw."""
    u = rng.random(size)
    if not len(members):
        return np.zeros(size, dtype=np.int64)
    return members[np.minimum(np.searchsorted(cdf_, u, side="right"), len(cdf_) - 1)]


def draw_requests(
    cfg: SimulationConfig,
    truth: Truth,
    pool: DayPool,
    rng: np.random.Generator,
    n: int,
    day_us: int,
) -> _Requests:
    """Exactly ``n`` impressions in requests of slots_min..slots_max slots (the last one cut).

    A ``new_user_traffic_share`` of requests comes from users in their first days, the rest
    from established users, each by activity; a request on the signup day comes after it.
    """
    sizes = rng.integers(cfg.slots_min, cfg.slots_max + 1, size=n // cfg.slots_min + 1)
    ends = np.cumsum(sizes)
    n_requests = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_requests]
    sizes[-1] -= ends[n_requests - 1] - n

    new = rng.random(n_requests) < (cfg.new_user_traffic_share if len(pool.new) else 0.0)
    if not len(pool.established):
        new[:] = True
    user = np.where(
        new,
        _pick(rng, pool.new, pool.new_cdf, n_requests),
        _pick(rng, pool.established, pool.established_cdf, n_requests),
    )
    own_device = rng.random(n_requests) < cfg.device_loyalty
    device = np.where(
        own_device, truth.users.device[user], rng.integers(0, len(DEVICES), n_requests)
    )
    hour = draw(rng, _HOUR_CDF, n_requests)
    offset = hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n_requests)
    after_signup = truth.users.signup_us[user] - day_us
    offset = np.maximum(offset, after_signup + rng.integers(1_000_000, US_PER_HOUR, n_requests))
    hour = offset // US_PER_HOUR
    order = np.argsort(offset, kind="stable")  # requests in time order, ids follow it
    user, device, hour, offset, sizes = (
        user[order],
        device[order],
        hour[order],
        offset[order],
        sizes[order],
    )

    request = np.repeat(np.arange(n_requests), sizes)
    starts = np.cumsum(sizes) - sizes
    position = np.arange(n) - np.repeat(starts, sizes) + 1
    item = _distinct_items_per_request(pool, rng, request)
    return _Requests(
        offset_us=offset[request],
        request=request,
        n_requests=n_requests,
        user=user[request],
        item=item,
        position=position,
        device=device[request],
        hour=hour[request],
    )


def _distinct_items_per_request(
    pool: DayPool, rng: np.random.Generator, request: np.ndarray
) -> np.ndarray:
    """Popularity-weighted listed items, redrawn until no request shows an item twice."""
    n_listed = len(pool.items)
    slot = draw(rng, pool.items_cdf, len(request))
    for attempt in range(10_000):
        key = request * n_listed + slot
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(len(key), dtype=bool)
        repeated[1:] = key[order][1:] == key[order][:-1]
        again = order[repeated]
        if not again.size:
            return pool.items[slot]
        # Popularity first; uniform later so tiny catalogues with a dominant item still finish.
        slot[again] = (
            draw(rng, pool.items_cdf, again.size)
            if attempt < 20
            else rng.integers(0, n_listed, again.size)
        )
    raise RuntimeError("could not draw distinct items per request; raise n_items")
