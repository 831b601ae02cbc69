"""Click-log simulator: writes the raw-data contract together with a known ground truth.

Every impression gets a true click probability from a logistic model whose parts are the
kinds of signal a ranking model is expected to find (docs/data-contract.md, "Simulator"):

    logit = base + user_bias[u] + item_quality[i] + position[pos] + hour[h] + day_of_week[d]
            + segment_category[s, c] + segment_price[s] * log_price_z[i] + age_category[a, c]
            + device_hour[dev, h] + segment_category_device[s, c, dev]
            + latent_strength * taste[u] . item_vector[i] / sqrt(latent_dim)

Most of the signal sits in low-cardinality crosses of columns the pipeline exposes as features
(segment, category, device, hour, position, price); the per-id parts (bias, quality, latent
taste) are moderate and every id has ~100 impressions at the default sizes, so models with id
embeddings can approach the oracle. ``base`` is solved so the overall CTR hits ``target_ctr``.
The click label is a Bernoulli draw from ``p_click``; the oracle AUC / log loss (true
probabilities vs drawn labels) is the ceiling every model metric is compared with.

Randomness is split into independent, seed-derived streams (entity attributes, drift, base
calibration, one per day), so the same config always gives the same bytes and turning drift on
changes nothing before ``drift_day``. Days are generated one at a time, so memory is bounded by
the largest day, and each folder is replaced atomically by a rename.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rankflow.data.contract import DEVICES, arrow_schema, partition_dir

log = logging.getLogger(__name__)

# Vocabularies. Shares are the population mix; effects that depend on them are documented in
# docs/data-contract.md ("Simulator").
SEGMENTS: Final = ("casual", "power", "deal_seeker", "explorer", "loyal")
SEGMENT_SHARES: Final = (0.35, 0.12, 0.20, 0.18, 0.15)
# Slope of the logit on standardised log price, per segment, before ``segment_price_strength``:
# deal seekers shy away from expensive items, power users do not mind them.
SEGMENT_PRICE_SLOPES: Final = (-0.3, 0.5, -1.5, 0.0, -0.5)
AGE_BUCKETS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES: Final = (0.18, 0.30, 0.24, 0.16, 0.12)
REGIONS: Final = ("na-east", "na-west", "eu-west", "eu-north", "apac", "latam")
REGION_SHARES: Final = (0.22, 0.18, 0.20, 0.10, 0.20, 0.10)
DEVICE_SHARES: Final = (0.60, 0.30, 0.10)  # preferred device of users, in DEVICES order
# Hour (UTC) at which each device's click propensity peaks: phones late evening, desktops at
# work, tablets after dinner. ``device_hour_strength`` is the amplitude.
DEVICE_PEAK_HOURS: Final = (22.0, 11.0, 19.0)
CATEGORY_NAMES: Final = (
    "electronics", "fashion", "home", "beauty", "sports", "books", "toys", "grocery",
    "garden", "automotive", "pets", "music", "games", "health", "jewelry", "office",
    "baby", "travel", "outdoor", "crafts",
)  # fmt: skip
# Day-of-week click effect (Monday..Sunday), times ``seasonality_strength``: weekends click more.
DAY_OF_WEEK_EFFECT: Final = (-0.3, -0.2, 0.0, 0.0, 0.2, 0.8, 0.6)
CTR_PEAK_HOUR: Final = 21.0  # the hour-of-day CTR curve peaks in the evening

TRUTH_FORMAT_VERSION: Final = 1
MARKER_FILE: Final = ".rankflow-simulation"
_PILOT_IMPRESSIONS: Final = 70_000
_US_PER_HOUR: Final = 3_600_000_000
# Stream ids for np.random.default_rng([seed, stream, ...]); never renumber (changes the data).
_STREAM_ENTITIES, _STREAM_DRIFT, _STREAM_PILOT, _STREAM_DAY = 0, 1, 2, 3


class SimulationConfig(BaseModel):
    """Sizes, time range and truth strengths of a simulated dataset (``simulation:`` in YAML).

    Strengths are in logit units; 0 switches a component off.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(7, description="Seed of every random draw: same config, same data")
    n_users: int = Field(10_000, ge=1)
    n_items: int = Field(2_000, ge=1)
    n_categories: int = Field(20, ge=1, description="Item categories (the first 20 have names)")
    n_impressions: int = Field(1_000_000, ge=1, description="Total over all days, exact")
    days: int = Field(30, ge=1)
    end_date: date | None = Field(
        None, description="Exclusive end day (UTC); None = today UTC, so no data lies in the future"
    )
    target_ctr: float = Field(
        0.045, gt=0, lt=0.5, description="Overall CTR the base logit is solved for"
    )

    # Traffic shape
    slots_min: int = Field(4, ge=1, le=100, description="Fewest slots of a request")
    slots_max: int = Field(10, ge=1, le=100, description="Most slots of a request")
    user_activity_sigma: float = Field(
        1.0, ge=0, description="Log-normal sigma of user activity (heavy tail)"
    )
    item_popularity_exponent: float = Field(0.8, ge=0, description="Zipf exponent of item exposure")
    device_loyalty: float = Field(
        0.8, ge=0, le=1, description="Share of requests on the preferred device"
    )
    weekend_traffic_lift: float = Field(
        0.15, ge=0, description="Extra traffic on Saturdays and Sundays"
    )
    attribute_null_rate: float = Field(
        0.02, ge=0, le=1, description="Share of null age_bucket / region"
    )

    # Truth strengths
    user_bias_std: float = Field(0.3, ge=0, description="Std of the per-user logit offset")
    item_quality_std: float = Field(0.4, ge=0, description="Std of the per-item logit offset")
    position_bias_strength: float = Field(
        0.5, ge=0, description="Logit falls by this times ln(position)"
    )
    seasonality_strength: float = Field(
        0.2, ge=0, description="Amplitude of the hour and day-of-week curves"
    )
    segment_category_strength: float = Field(
        0.6, ge=0, description="Std of segment x category weights"
    )
    segment_price_strength: float = Field(
        0.3, ge=0, description="Scale of the per-segment price slopes"
    )
    age_category_strength: float = Field(
        0.15, ge=0, description="Std of age_bucket x category weights"
    )
    device_hour_strength: float = Field(
        0.3, ge=0, description="Amplitude of the device x hour curves"
    )
    segment_category_device_strength: float = Field(
        0.35, ge=0, description="Std of the 3rd-order segment x category x device weights"
    )
    latent_strength: float = Field(
        0.5, ge=0, description="Std of the user-taste . item-vector term"
    )
    latent_dim: int = Field(8, ge=1, description="Dimension of tastes and item vectors")
    latent_category_share: float = Field(
        0.5, ge=0, le=1, description="Share of an item vector's variance shared by its category"
    )

    # Concept drift
    drift_day: int | None = Field(
        None, ge=0, description="0-based day from which the truth drifts; None = never"
    )
    drift_strength: float = Field(
        0.5, ge=0, le=1, description="0 = no change, 1 = drifted parts replaced by fresh draws"
    )
    drift_user_share: float = Field(
        0.5, ge=0, le=1, description="Share of users whose taste drifts"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        if self.slots_min > self.slots_max:
            raise ValueError(
                f"slots_min ({self.slots_min}) must be <= slots_max ({self.slots_max})"
            )
        if self.n_items < self.slots_max:
            raise ValueError(
                f"n_items ({self.n_items}) must be >= slots_max ({self.slots_max}): "
                "a request never shows the same item twice"
            )
        if self.n_impressions < self.days:
            raise ValueError(f"n_impressions ({self.n_impressions}) must be >= days ({self.days})")
        if self.drift_day is not None and self.drift_day >= self.days:
            raise ValueError(f"drift_day ({self.drift_day}) must be < days ({self.days})")
        return self

    def resolved_end_date(self) -> date:
        """The exclusive end day: ``end_date`` or today (UTC)."""
        return self.end_date or datetime.now(UTC).date()

    def resolved_start_date(self) -> date:
        return self.resolved_end_date() - timedelta(days=self.days)


@dataclass(frozen=True)
class SimulationSummary:
    """What ``simulate`` wrote; equal for equal configs and folders."""

    seed: int
    n_users: int
    n_items: int
    n_requests: int
    n_impressions: int
    n_clicks: int
    positive_rate: float
    start_date: date  # first day
    end_date: date  # exclusive
    drift_day: int | None
    base_logit: float
    oracle_auc: float
    oracle_logloss: float
    raw_dir: Path
    truth_dir: Path
    truth_file: Path

    def __str__(self) -> str:
        drift = f"from day {self.drift_day}" if self.drift_day is not None else "none"
        return "\n".join(
            [
                f"simulated {self.n_impressions:,} impressions in {self.n_requests:,} requests, "
                f"{self.n_users:,} users, {self.n_items:,} items (seed {self.seed})",
                f"  days          {self.start_date} .. {self.end_date - timedelta(days=1)}",
                f"  clicks        {self.n_clicks:,} (CTR {self.positive_rate:.4f})",
                f"  oracle        AUC {self.oracle_auc:.4f}, log loss {self.oracle_logloss:.4f}",
                f"  drift         {drift}",
                f"  raw           {self.raw_dir}",
                f"  truth         {self.truth_dir}",
            ]
        )


# --------------------------------------------------------------------------------------------
# Ground truth


@dataclass
class _Truth:
    """Hidden parameters; indices are 0-based positions (ids are index + 1)."""

    base_logit: float
    user_segment: np.ndarray
    user_age: np.ndarray  # len(AGE_BUCKETS) = null
    user_region: np.ndarray  # len(REGIONS) = null
    user_bias: np.ndarray
    user_activity_cdf: np.ndarray
    user_device: np.ndarray
    user_taste: np.ndarray
    user_taste_drifted: np.ndarray
    user_drifts: np.ndarray
    item_category: np.ndarray
    item_price: np.ndarray
    item_log_price_z: np.ndarray
    item_quality: np.ndarray
    item_popularity_cdf: np.ndarray
    item_vector: np.ndarray
    position_effect: np.ndarray  # index = position (0 unused)
    hour_effect: np.ndarray
    day_of_week_effect: np.ndarray
    segment_category: np.ndarray
    segment_category_drifted: np.ndarray
    segment_price: np.ndarray
    age_category: np.ndarray  # last row (null age) is zero
    device_hour: np.ndarray
    segment_category_device: np.ndarray


def category_names(n: int) -> list[str]:
    """Category vocabulary: readable names first, then ``category_20``, ``category_21``, ..."""
    return [CATEGORY_NAMES[k] if k < len(CATEGORY_NAMES) else f"category_{k:02d}" for k in range(n)]


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return cdf


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Categorical draws by inverse CDF: one uniform per draw, O(size log n)."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _rotate(rng: np.random.Generator, values: np.ndarray, strength: float) -> np.ndarray:
    """Move ``values`` towards a fresh draw of the same scale, keeping its variance:
    cos(t) * old + sin(t) * new with t = strength * pi / 2."""
    angle = strength * math.pi / 2
    fresh = rng.standard_normal(values.shape) * (values.std() if values.size > 1 else 1.0)
    return math.cos(angle) * values + math.sin(angle) * fresh


def _build_truth(cfg: SimulationConfig) -> _Truth:
    rng = np.random.default_rng([cfg.seed, _STREAM_ENTITIES])
    n_seg, n_cat, n_dev = len(SEGMENTS), cfg.n_categories, len(DEVICES)

    user_segment = _draw(rng, _cdf(np.array(SEGMENT_SHARES)), cfg.n_users)
    user_age = _draw(rng, _cdf(np.array(AGE_SHARES)), cfg.n_users)
    user_age[rng.random(cfg.n_users) < cfg.attribute_null_rate] = len(AGE_BUCKETS)
    user_region = _draw(rng, _cdf(np.array(REGION_SHARES)), cfg.n_users)
    user_region[rng.random(cfg.n_users) < cfg.attribute_null_rate] = len(REGIONS)
    user_bias = rng.normal(0.0, cfg.user_bias_std, cfg.n_users)
    activity = rng.lognormal(0.0, cfg.user_activity_sigma, cfg.n_users)
    user_device = _draw(rng, _cdf(np.array(DEVICE_SHARES)), cfg.n_users)
    user_taste = rng.standard_normal((cfg.n_users, cfg.latent_dim))

    # Category sizes are skewed too (a few big categories, a long tail).
    category_weights = rng.permutation(1.0 / np.arange(1, n_cat + 1) ** 0.6)
    item_category = _draw(rng, _cdf(category_weights), cfg.n_items)
    category_log_price = rng.normal(math.log(30.0), 0.8, n_cat)
    log_price = rng.normal(category_log_price[item_category], 0.5)
    item_price = np.maximum(np.round(np.exp(log_price), 2), 0.5)
    log_price = np.log(item_price)
    item_log_price_z = (log_price - log_price.mean()) / (log_price.std() or 1.0)
    item_quality = rng.normal(0.0, cfg.item_quality_std, cfg.n_items)
    popularity = rng.permutation(
        1.0 / np.arange(1, cfg.n_items + 1) ** cfg.item_popularity_exponent
    )
    centroids = rng.standard_normal((n_cat, cfg.latent_dim))
    share = cfg.latent_category_share
    item_vector = math.sqrt(share) * centroids[item_category] + math.sqrt(
        1 - share
    ) * rng.standard_normal((cfg.n_items, cfg.latent_dim))

    hours = np.arange(24)
    position_effect = np.zeros(101)
    position_effect[1:] = -cfg.position_bias_strength * np.log(np.arange(1, 101))
    hour_effect = cfg.seasonality_strength * np.cos(2 * np.pi * (hours - CTR_PEAK_HOUR) / 24)
    day_of_week_effect = cfg.seasonality_strength * np.array(DAY_OF_WEEK_EFFECT)
    segment_category = rng.normal(0.0, cfg.segment_category_strength, (n_seg, n_cat))
    segment_price = cfg.segment_price_strength * np.array(SEGMENT_PRICE_SLOPES)
    age_category = np.zeros((len(AGE_BUCKETS) + 1, n_cat))
    age_category[:-1] = rng.normal(0.0, cfg.age_category_strength, (len(AGE_BUCKETS), n_cat))
    peaks = np.array(DEVICE_PEAK_HOURS)[:, None]
    device_hour = cfg.device_hour_strength * np.cos(2 * np.pi * (hours[None, :] - peaks) / 24)
    segment_category_device = rng.normal(
        0.0, cfg.segment_category_device_strength, (n_seg, n_cat, n_dev)
    )

    # Drift draws come from their own stream so that switching drift on or off, or changing
    # its strength, leaves everything above (and every day before drift_day) unchanged.
    drift_rng = np.random.default_rng([cfg.seed, _STREAM_DRIFT])
    segment_category_drifted = _rotate(drift_rng, segment_category, cfg.drift_strength)
    user_drifts = drift_rng.random(cfg.n_users) < cfg.drift_user_share
    user_taste_drifted = user_taste.copy()
    rotated = _rotate(drift_rng, user_taste, cfg.drift_strength)
    user_taste_drifted[user_drifts] = rotated[user_drifts]

    truth = _Truth(
        base_logit=0.0,
        user_segment=user_segment,
        user_age=user_age,
        user_region=user_region,
        user_bias=user_bias,
        user_activity_cdf=_cdf(activity),
        user_device=user_device,
        user_taste=user_taste,
        user_taste_drifted=user_taste_drifted,
        user_drifts=user_drifts,
        item_category=item_category,
        item_price=item_price,
        item_log_price_z=item_log_price_z,
        item_quality=item_quality,
        item_popularity_cdf=_cdf(popularity),
        item_vector=item_vector,
        position_effect=position_effect,
        hour_effect=hour_effect,
        day_of_week_effect=day_of_week_effect,
        segment_category=segment_category,
        segment_category_drifted=segment_category_drifted,
        segment_price=segment_price,
        age_category=age_category,
        device_hour=device_hour,
        segment_category_device=segment_category_device,
    )
    truth.base_logit = _calibrate_base(cfg, truth)
    return truth


def _calibrate_base(cfg: SimulationConfig, truth: _Truth) -> float:
    """Solve the base logit so the mean true probability of a pilot sample equals target_ctr."""
    rng = np.random.default_rng([cfg.seed, _STREAM_PILOT])
    per_day = max(_PILOT_IMPRESSIONS // 7, cfg.slots_max)
    logits = [
        _logit(cfg, truth, _draw_requests(cfg, truth, rng, per_day), dow, drifted=False)
        for dow in range(7)
    ]
    z = np.concatenate(logits)
    low, high = -20.0, 20.0
    for _ in range(60):  # bisection: mean sigmoid is monotone in the base
        mid = (low + high) / 2
        if _sigmoid(z + mid).mean() < cfg.target_ctr:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class _Requests:
    """One day's (or the pilot's) impressions before they get times and labels."""

    offset_us: np.ndarray  # per impression, microseconds since the day's midnight
    request: np.ndarray  # per impression, 0-based request index in time order
    n_requests: int
    user: np.ndarray
    item: np.ndarray
    position: np.ndarray
    device: np.ndarray
    hour: np.ndarray


def _traffic_by_hour() -> np.ndarray:
    """Share of requests per UTC hour: a night trough, a lunch bump and an evening peak."""
    hours = np.arange(24)

    def bump(center: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(hours - center), 24 - np.abs(hours - center))
        return np.exp(-((distance / width) ** 2))

    weights = 0.15 + bump(20.5, 3.5) + 0.6 * bump(12.5, 2.5)
    return weights / weights.sum()


_HOUR_CDF: Final = _cdf(_traffic_by_hour())


def _draw_requests(
    cfg: SimulationConfig, truth: _Truth, rng: np.random.Generator, n: int
) -> _Requests:
    """Exactly ``n`` impressions in requests of slots_min..slots_max slots (the last one cut)."""
    sizes = rng.integers(cfg.slots_min, cfg.slots_max + 1, size=n // cfg.slots_min + 1)
    ends = np.cumsum(sizes)
    n_requests = int(np.searchsorted(ends, n)) + 1
    sizes = sizes[:n_requests]
    sizes[-1] -= ends[n_requests - 1] - n

    user = _draw(rng, truth.user_activity_cdf, n_requests)
    own_device = rng.random(n_requests) < cfg.device_loyalty
    device = np.where(
        own_device, truth.user_device[user], rng.integers(0, len(DEVICES), n_requests)
    )
    hour = _draw(rng, _HOUR_CDF, n_requests)
    offset = hour * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n_requests)
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
    item = _distinct_items_per_request(cfg, truth, rng, request)
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
    cfg: SimulationConfig, truth: _Truth, rng: np.random.Generator, request: np.ndarray
) -> np.ndarray:
    """Popularity-weighted items, redrawn until no request shows an item twice."""
    item = _draw(rng, truth.item_popularity_cdf, len(request))
    for attempt in range(10_000):
        key = request * cfg.n_items + item
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(len(key), dtype=bool)
        repeated[1:] = key[order][1:] == key[order][:-1]
        again = order[repeated]
        if not again.size:
            return item
        # Popularity first; uniform later so tiny catalogues with a dominant item still finish.
        item[again] = (
            _draw(rng, truth.item_popularity_cdf, again.size)
            if attempt < 20
            else rng.integers(0, cfg.n_items, again.size)
        )
    raise RuntimeError("could not draw distinct items per request; raise n_items")


def _logit(
    cfg: SimulationConfig, truth: _Truth, r: _Requests, day_of_week: int, *, drifted: bool
) -> np.ndarray:
    seg = truth.user_segment[r.user]
    cat = truth.item_category[r.item]
    segment_category = truth.segment_category_drifted if drifted else truth.segment_category
    taste = (truth.user_taste_drifted if drifted else truth.user_taste)[r.user]
    latent = np.einsum("ij,ij->i", taste, truth.item_vector[r.item]) / math.sqrt(cfg.latent_dim)
    return (
        truth.base_logit
        + truth.user_bias[r.user]
        + truth.item_quality[r.item]
        + truth.position_effect[r.position]
        + truth.hour_effect[r.hour]
        + truth.day_of_week_effect[day_of_week]
        + segment_category[seg, cat]
        + truth.segment_price[seg] * truth.item_log_price_z[r.item]
        + truth.age_category[truth.user_age[r.user], cat]
        + truth.device_hour[r.device, r.hour]
        + truth.segment_category_device[seg, cat, r.device]
        + cfg.latent_strength * latent
    )


# --------------------------------------------------------------------------------------------
# Metrics against the truth


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula; tied scores share their average rank."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    del sorted_scores
    ends = np.r_[starts[1:], len(scores)]
    positives = np.add.reduceat(labels[order].astype(np.int64), starts)  # per tie group
    rank_sum = float(((starts + ends + 1) / 2 * positives).sum())  # average 1-based ranks
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-12) -> float:
    p = np.clip(np.asarray(probabilities, dtype=float), eps, 1 - eps)
    y = np.asarray(labels).astype(float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


# --------------------------------------------------------------------------------------------
# Writing


def _day_counts(cfg: SimulationConfig, start: date) -> np.ndarray:
    """Impressions per day (weekends busier), summing exactly to n_impressions."""
    weights = np.array(
        [
            1.0 + cfg.weekend_traffic_lift * ((start + timedelta(days=d)).weekday() >= 5)
            for d in range(cfg.days)
        ]
    )
    exact = cfg.n_impressions * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = cfg.n_impressions - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1  # largest remainders
    # n_impressions >= days, but one day must never be empty: take from the largest.
    while (counts == 0).any():
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _ids(prefix: str, index: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(index), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def _labelled(values: np.ndarray, vocabulary: tuple[str, ...] | list[str]) -> pa.Array:
    """Strings from indices; an index equal to len(vocabulary) is null."""
    vocab = np.array([*vocabulary, ""], dtype=object)
    return pa.array(vocab[values], type=pa.string(), mask=values == len(vocabulary))


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def _epoch_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _write_entities(
    cfg: SimulationConfig, truth: _Truth, raw: Path, truth_dir: Path, start: date
) -> None:
    # Signup and creation times lie 1 minute to 3 years before the first day, so every id has
    # valid attributes at all of its impressions.
    rng = np.random.default_rng([cfg.seed, _STREAM_ENTITIES, 1])
    first_us = _epoch_us(start)
    span = 3 * 365 * 24 * _US_PER_HOUR
    user_ids = np.arange(1, cfg.n_users + 1, dtype=np.int64)
    item_ids = np.arange(1, cfg.n_items + 1, dtype=np.int64)
    users = pa.Table.from_arrays(
        [
            pa.array(user_ids),
            _labelled(truth.user_segment, SEGMENTS),
            _labelled(truth.user_age, AGE_BUCKETS),
            _labelled(truth.user_region, REGIONS),
            _timestamps(first_us - rng.integers(60_000_000, span, cfg.n_users)),
        ],
        schema=arrow_schema("users"),
    )
    items = pa.Table.from_arrays(
        [
            pa.array(item_ids),
            _labelled(truth.item_category, category_names(cfg.n_categories)),
            pa.array(truth.item_price),
            _timestamps(first_us - rng.integers(60_000_000, span, cfg.n_items)),
        ],
        schema=arrow_schema("items"),
    )
    for folder, name, table in ((raw / "users", "users", users), (raw / "items", "items", items)):
        folder.mkdir(parents=True)
        pq.write_table(table, folder / f"{name}.parquet")

    # Hidden per-entity parameters, for analysis only (no feature may read truth/).
    user_truth = {
        "user_id": user_ids,
        "user_bias": truth.user_bias,
        "activity_share": np.diff(truth.user_activity_cdf, prepend=0.0),
        "preferred_device": _labelled(truth.user_device, DEVICES),
        "taste_drifts": truth.user_drifts,
    }
    user_truth |= {f"taste_{k}": truth.user_taste[:, k] for k in range(cfg.latent_dim)}
    user_truth |= {
        f"taste_drifted_{k}": truth.user_taste_drifted[:, k] for k in range(cfg.latent_dim)
    }
    item_truth = {
        "item_id": item_ids,
        "quality": truth.item_quality,
        "exposure_share": np.diff(truth.item_popularity_cdf, prepend=0.0),
        "log_price_z": truth.item_log_price_z,
    }
    item_truth |= {f"vector_{k}": truth.item_vector[:, k] for k in range(cfg.latent_dim)}
    pq.write_table(pa.table(user_truth), truth_dir / "users.parquet")
    pq.write_table(pa.table(item_truth), truth_dir / "items.parquet")


@dataclass
class _DayResult:
    n_requests: int
    clicked: np.ndarray
    p_click: np.ndarray


def _write_day(
    cfg: SimulationConfig,
    truth: _Truth,
    day_index: int,
    day: date,
    n: int,
    raw: Path,
    truth_dir: Path,
) -> _DayResult:
    rng = np.random.default_rng([cfg.seed, _STREAM_DAY, day_index])
    requests = _draw_requests(cfg, truth, rng, n)
    drifted = cfg.drift_day is not None and day_index >= cfg.drift_day
    p_click = _sigmoid(_logit(cfg, truth, requests, day.weekday(), drifted=drifted))
    clicked = (rng.random(n) < p_click).astype(np.int8)

    stamp = day.strftime("%Y%m%d")
    event_id = _ids(f"ev-{stamp}-", np.arange(n), 8)
    impressions = pa.Table.from_arrays(
        [
            event_id,
            _ids(f"rq-{stamp}-", requests.request, 7),
            _timestamps(_epoch_us(day) + requests.offset_us),
            pa.array(requests.user + 1, type=pa.int64()),
            pa.array(requests.item + 1, type=pa.int64()),
            pa.array(requests.position, type=pa.int32()),
            _labelled(requests.device, DEVICES),
            pa.array(clicked, type=pa.int8()),
        ],
        schema=arrow_schema("impressions"),
    )
    raw_part = partition_dir(raw, "impressions", day)
    truth_part = partition_dir(truth_dir, "impressions", day)
    raw_part.mkdir(parents=True)
    truth_part.mkdir(parents=True)
    pq.write_table(impressions, raw_part / "part-0.parquet")
    truth_table = pa.table({"event_id": event_id, "p_click": pa.array(p_click, type=pa.float64())})
    pq.write_table(truth_table, truth_part / "part-0.parquet")
    return _DayResult(requests.n_requests, clicked, p_click)


def _truth_parameters(cfg: SimulationConfig, truth: _Truth) -> dict[str, Any]:
    return {
        "base_logit": truth.base_logit,
        "vocabularies": {
            "segment": list(SEGMENTS),
            "age_bucket": list(AGE_BUCKETS),
            "region": list(REGIONS),
            "device": list(DEVICES),
            "category": category_names(cfg.n_categories),
        },
        "effects": {
            "position": truth.position_effect[1:].tolist(),
            "hour": truth.hour_effect.tolist(),
            "day_of_week": truth.day_of_week_effect.tolist(),
            "segment_category": truth.segment_category.tolist(),
            "segment_category_after_drift": truth.segment_category_drifted.tolist(),
            "segment_price_slope": truth.segment_price.tolist(),
            "age_category": truth.age_category[:-1].tolist(),
            "device_hour": truth.device_hour.tolist(),
            "segment_category_device": truth.segment_category_device.tolist(),
            "latent_strength": cfg.latent_strength,
        },
        "hourly_traffic_share": _traffic_by_hour().tolist(),
        "users_with_drifting_taste": int(truth.user_drifts.sum()),
    }


# --------------------------------------------------------------------------------------------
# Atomic replacement of the output folders


def _check_replaceable(target: Path) -> None:
    """Refuse to replace a folder that holds something the simulator did not write."""
    if target.exists() and any(target.iterdir()) and not (target / MARKER_FILE).is_file():
        raise FileExistsError(
            f"{target} is not empty and has no {MARKER_FILE} file, so it was not written by "
            "rankflow's simulator; refusing to replace it. Point raw_dir elsewhere (or set "
            "source: raw to use that data), or remove the folder yourself."
        )


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A fresh folder next to ``target``; removed if the block fails."""
    staging = target.with_name(f".{target.name}.incoming")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames: readers see the old or the new folder."""
    retired = target.with_name(f".{target.name}.previous")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.rename(target, retired)
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Entry point


def simulate(config: SimulationConfig, raw_dir: Path, truth_dir: Path) -> SimulationSummary:
    """Write a simulated dataset in the raw-data contract to ``raw_dir`` and its ground truth to
    ``truth_dir``, replacing any previous simulation there; return what was written."""
    raw_dir, truth_dir = Path(raw_dir).resolve(), Path(truth_dir).resolve()
    if raw_dir == truth_dir or raw_dir in truth_dir.parents or truth_dir in raw_dir.parents:
        raise ValueError(
            f"raw_dir ({raw_dir}) and truth_dir ({truth_dir}) must be separate folders"
        )
    for target in (raw_dir, truth_dir):
        _check_replaceable(target)

    start, end = config.resolved_start_date(), config.resolved_end_date()
    truth = _build_truth(config)
    counts = _day_counts(config, start)
    marker = json.dumps({"seed": config.seed, "start_date": str(start), "end_date": str(end)})

    with _staged(raw_dir) as raw, _staged(truth_dir) as truth_out:
        _write_entities(config, truth, raw, truth_out, start)
        labels, probabilities, daily, n_requests = [], [], [], 0
        for d in range(config.days):
            day = start + timedelta(days=d)
            result = _write_day(config, truth, d, day, int(counts[d]), raw, truth_out)
            labels.append(result.clicked)
            probabilities.append(result.p_click)
            n_requests += result.n_requests
            daily.append(
                {
                    "date": str(day),
                    "drifted": config.drift_day is not None and d >= config.drift_day,
                    "requests": result.n_requests,
                    "impressions": len(result.clicked),
                    "clicks": int(result.clicked.sum()),
                    "mean_p_click": float(result.p_click.mean()),
                    "oracle_auc": binary_auc(result.clicked, result.p_click),
                    "oracle_logloss": binary_logloss(result.clicked, result.p_click),
                }
            )
            log.debug("simulated %s: %d impressions", day, len(result.clicked))
        y, p = np.concatenate(labels), np.concatenate(probabilities)

        summary = SimulationSummary(
            seed=config.seed,
            n_users=config.n_users,
            n_items=config.n_items,
            n_requests=n_requests,
            n_impressions=len(y),
            n_clicks=int(y.sum()),
            positive_rate=float(y.mean()),
            start_date=start,
            end_date=end,
            drift_day=config.drift_day,
            base_logit=truth.base_logit,
            oracle_auc=binary_auc(y, p),
            oracle_logloss=binary_logloss(y, p),
            raw_dir=raw_dir,
            truth_dir=truth_dir,
            truth_file=truth_dir / "simulation.json",
        )
        document = {
            "format_version": TRUTH_FORMAT_VERSION,
            "seed": config.seed,
            "config": config.model_dump(mode="json"),
            "start_date": str(start),
            "end_date_exclusive": str(end),
            "summary": {
                key: value
                for key, value in summary.__dict__.items()
                if key not in ("raw_dir", "truth_dir", "truth_file", "start_date", "end_date")
            },
            "truth": _truth_parameters(config, truth),
            "daily": daily,
        }
        (truth_out / "simulation.json").write_text(json.dumps(document, indent=2) + "\n")
        (raw / MARKER_FILE).write_text(marker + "\n")
        (truth_out / MARKER_FILE).write_text(marker + "\n")
        # Truth first, raw last: raw is what the pipeline reads, so it flips only once its
        # truth is in place.
        _swap_in(truth_out, truth_dir)
        _swap_in(raw, raw_dir)
    return summary
