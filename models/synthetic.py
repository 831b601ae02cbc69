"""A small generator of training-set-shaped frames with a known click probability.

Used by tests and ``bench/bench_models.py`` until the real training set (dbt + Feast) is wired
in. The frame has exactly the training-set contract's columns and dtypes (entity and label
columns plus every ``ctr_ranker_v1`` feature under its bare name, nulls included); the truth
is a Series of ``p_click`` indexed by ``event_id``, like the simulator's truth files.

The true logit has main effects (user, item, position, device) and crosses a model must learn:
segment x category, device x hour block, segment x price, and a latent user . item dot
product. Stats features are noisy, smoothed estimates of the user / item / user-category
propensities, as the warehouse would compute them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models import schema
from models.config import ModelConfig, parse_model_config

# The feature service schema of ``ctr_ranker_v1`` (feature -> Feast value type).
CTR_RANKER_V1_SCHEMA: dict[str, str] = {
    "user_segment": "STRING",
    "user_age_bucket": "STRING",
    "user_region": "STRING",
    "item_price": "FLOAT64",
    **{
        f"user_{kind}_{w}": "INT64"
        for kind in ("impressions", "clicks")
        for w in ("1d", "7d", "28d")
    },
    "user_ctr_7d": "FLOAT64",
    "user_ctr_28d": "FLOAT64",
    "user_days_since_last_click": "FLOAT64",
    **{
        f"item_{kind}_{w}": "INT64"
        for kind in ("impressions", "clicks")
        for w in ("1d", "7d", "28d")
    },
    "item_ctr_7d": "FLOAT64",
    "item_ctr_28d": "FLOAT64",
    "uc_impressions_28d": "INT64",
    "uc_clicks_28d": "INT64",
    "uc_ctr_28d": "FLOAT64",
    "log_position": "FLOAT64",
    "hour_sin": "FLOAT64",
    "hour_cos": "FLOAT64",
    "uc_ctr_lift": "FLOAT64",
}
ENTITY_COLUMNS: list[str] = list(schema.TRAINING_FRAME_COLUMNS)
SEGMENTS = ("casual", "power", "deal_seeker")
DEVICES = ("mobile", "desktop", "tablet")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west")


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 400
    n_items: int = 200
    n_categories: int = 8
    days: int = 14
    start: str = "2026-01-01"
    base_ctr: float = 0.05
    cross_strength: float = 1.0  # scale of the segment x category and device x hour effects
    latent_dim: int = 4
    latent_strength: float = 0.8  # scale of the user . item latent interaction
    user_effect: float = 0.6  # std of the per-user main effect (logits)
    item_effect: float = 0.6  # std of the per-item main effect (logits)
    null_rate: float = 0.05  # share of null optional attributes (age bucket, region)
    new_user_rate: float = 0.08  # share of rows whose user has no stats row yet
    prior_strength: float = 20.0  # m in the smoothed CTR (clicks + m * prior) / (imps + m)


@dataclass
class SyntheticSplits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    truth: pd.Series
    schema: dict[str, str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _smoothed(clicks: np.ndarray, imps: np.ndarray, prior: float, m: float) -> np.ndarray:
    return (clicks + m * prior) / (imps + m)


def make_training_frame(
    n_rows: int, *, seed: int = 0, config: SyntheticConfig | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """``n_rows`` impressions sorted by time, and the true p_click indexed by event_id."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    k = cfg.latent_dim

    # The world: users and items with their hidden propensities.
    user_bias = rng.normal(0, 1, cfg.n_users)
    user_latent = rng.normal(0, 1 / np.sqrt(k), (cfg.n_users, k))
    user_activity = rng.gamma(2.0, 2.0, cfg.n_users)
    user_segment = rng.choice(len(SEGMENTS), cfg.n_users, p=[0.5, 0.2, 0.3])
    user_device = rng.choice(len(DEVICES), cfg.n_users, p=[0.6, 0.3, 0.1])
    user_age = rng.integers(0, len(AGE_BUCKETS), cfg.n_users)
    user_region = rng.integers(0, len(REGIONS), cfg.n_users)
    item_bias = rng.normal(0, 1, cfg.n_items)
    item_latent = rng.normal(0, 1 / np.sqrt(k), (cfg.n_items, k))
    item_popularity = rng.lognormal(0, 1, cfg.n_items)
    item_category = rng.integers(0, cfg.n_categories, cfg.n_items)
    item_price = np.round(rng.lognormal(3 + 0.3 * item_category / cfg.n_categories, 0.8), 2)
    seg_cat = rng.normal(0, 0.7, (len(SEGMENTS), cfg.n_categories))
    dev_hour = rng.normal(0, 0.5, (len(DEVICES), 4))
    price_effect = np.array([0.0, 0.2, -0.6])

    # The impressions.
    u = rng.choice(cfg.n_users, n_rows, p=user_activity / user_activity.sum())
    i = rng.choice(cfg.n_items, n_rows, p=item_popularity / item_popularity.sum())
    position = np.minimum(rng.geometric(0.15, n_rows), 50).astype(np.int32)  # 1 = top slot
    device = np.where(rng.random(n_rows) < 0.85, user_device[u], rng.integers(0, 3, n_rows))
    start = pd.Timestamp(cfg.start, tz="UTC")
    offsets = np.sort(rng.uniform(0, cfg.days * 86400.0, n_rows))
    ts = start + pd.to_timedelta(np.round(offsets), unit="s")
    hour = ts.hour.to_numpy().astype(np.int32)
    seg = user_segment[u]
    cat = item_category[i]
    z_price = (np.log(item_price[i]) - 3.2) / 0.8

    main_u = cfg.user_effect * user_bias[u]
    main_i = cfg.item_effect * item_bias[i]
    logit = (
        main_u
        + main_i
        - 0.4 * np.log(position)
        + cfg.cross_strength * (seg_cat[seg, cat] + dev_hour[device, hour // 6])
        + price_effect[seg] * z_price
        + cfg.latent_strength * np.sqrt(k) * np.einsum("nk,nk->n", user_latent[u], item_latent[i])
    )
    logit += _intercept(logit, cfg.base_ctr)
    p_click = _sigmoid(logit)
    label = (rng.random(n_rows) < p_click).astype(np.int32)

    # Stats features: noisy smoothed estimates of the hidden propensities.
    base = np.log(cfg.base_ctr / (1 - cfg.base_ctr))
    prior, m = cfg.base_ctr, cfg.prior_strength
    cols: dict[str, np.ndarray] = {}
    p_user = _sigmoid(base + main_u)
    p_item = _sigmoid(base + main_i)
    for days, w in ((1, "1d"), (7, "7d"), (28, "28d")):
        imps = rng.poisson(user_activity[u] * days).astype(np.float64)
        cols[f"user_impressions_{w}"] = imps
        cols[f"user_clicks_{w}"] = rng.binomial(imps.astype(np.int64), p_user).astype(np.float64)
        imps_i = rng.poisson(item_popularity[i] * 20 * days).astype(np.float64)
        cols[f"item_impressions_{w}"] = imps_i
        cols[f"item_clicks_{w}"] = rng.binomial(imps_i.astype(np.int64), p_item).astype(np.float64)
    for w in ("7d", "28d"):
        cols[f"user_ctr_{w}"] = _smoothed(
            cols[f"user_clicks_{w}"], cols[f"user_impressions_{w}"], prior, m
        )
        cols[f"item_ctr_{w}"] = _smoothed(
            cols[f"item_clicks_{w}"], cols[f"item_impressions_{w}"], prior, m
        )
    cols["user_days_since_last_click"] = np.where(
        cols["user_clicks_28d"] > 0, np.minimum(rng.geometric(0.3, n_rows), 28), np.nan
    ).astype(np.float64)
    uc_imps = rng.poisson(user_activity[u] * 28 / 3).astype(np.float64)
    p_uc = _sigmoid(base + main_u + cfg.cross_strength * seg_cat[seg, cat])
    cols["uc_impressions_28d"] = uc_imps
    cols["uc_clicks_28d"] = rng.binomial(uc_imps.astype(np.int64), p_uc).astype(np.float64)
    cols["uc_ctr_28d"] = _smoothed(cols["uc_clicks_28d"], uc_imps, prior, m)
    cols["uc_ctr_lift"] = cols["uc_ctr_28d"] / cols["user_ctr_28d"]

    new_user = rng.random(n_rows) < cfg.new_user_rate  # no stats row yet: all user stats null
    for name in cols:
        if name.startswith(("user_", "uc_")):
            cols[name][new_user] = np.nan

    def _maybe_null(values: np.ndarray, labels: tuple[str, ...], rate: float) -> np.ndarray:
        out = np.array(labels, dtype=object)[values]
        out[rng.random(len(values)) < rate] = None
        return out

    event_id = np.array([f"e{seed:04d}-{n:08d}" for n in range(n_rows)], dtype=object)
    df = pd.DataFrame(
        {
            "event_id": event_id,
            "event_timestamp": ts,
            "user_id": (1000 + u).astype(np.int64),
            "item_id": (5000 + i).astype(np.int64),
            "category": np.array([f"cat_{c}" for c in range(cfg.n_categories)], dtype=object)[cat],
            "position": position,
            "device": np.array(DEVICES, dtype=object)[device],
            "hour_of_day": hour,
            "day_of_week": ts.dayofweek.to_numpy().astype(np.int32) + 1,
            "label": label,
            "user_segment": _maybe_null(seg, SEGMENTS, 0.01),
            "user_age_bucket": _maybe_null(user_age[u], AGE_BUCKETS, cfg.null_rate),
            "user_region": _maybe_null(user_region[u], REGIONS, cfg.null_rate),
            "item_price": item_price[i],
            **{name: cols[name] for name in CTR_RANKER_V1_SCHEMA if name in cols},
            "log_position": np.log1p(position.astype(np.float64)),
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
        }
    )
    df = df[ENTITY_COLUMNS + list(CTR_RANKER_V1_SCHEMA)]
    truth = pd.Series(p_click, index=pd.Index(event_id, name="event_id"), name="p_click")
    return df, truth


def _intercept(logit: np.ndarray, target: float) -> float:
    """The shift that makes the mean click probability ``target`` (a few Newton steps)."""
    shift = float(np.log(target / (1 - target)))
    for _ in range(20):
        p = _sigmoid(logit + shift)
        shift -= (p.mean() - target) / max((p * (1 - p)).mean(), 1e-9)
    return shift


def split_by_time(
    df: pd.DataFrame, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train / valid / test by event time (never at random), in the given row fractions."""
    ordered = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    n = len(ordered)
    a = round(n * fractions[0])
    b = round(n * (fractions[0] + fractions[1]))
    return ordered.iloc[:a].copy(), ordered.iloc[a:b].copy(), ordered.iloc[b:].copy()


def make_splits(
    n_rows: int, *, seed: int = 0, config: SyntheticConfig | None = None
) -> SyntheticSplits:
    """A time-split synthetic training set with its truth and feature service schema."""
    df, truth = make_training_frame(n_rows, seed=seed, config=config)
    train, valid, test = split_by_time(df)
    return SyntheticSplits(train, valid, test, truth, dict(CTR_RANKER_V1_SCHEMA))


def small_model_config(overrides: dict[str, Any] | None = None) -> ModelConfig:
    """A model config for synthetic frames at test scale: small tables and MLPs, no progress bar.

    Declares every ``ctr_ranker_v1`` feature and the entity columns, like ``configs/model.yaml``
    but with room for a few hundred users and items; ``overrides`` are dotted keys.
    """
    numeric: dict[str, dict[str, Any]] = {name: {} for name, t in CTR_RANKER_V1_SCHEMA.items()}
    for name in ("user_segment", "user_age_bucket", "user_region"):
        numeric.pop(name)
    for name in numeric:
        if "_impressions_" in name or "_clicks_" in name or name == "item_price":
            numeric[name] = {"log1p": True}
    numeric["uc_ctr_lift"] = {"clip": [0, 20], "log1p": True}
    data = {
        "features": {
            "categorical": {
                "user_id": {"encoding": "hash", "buckets": 997, "embedding_dim": 8},
                "item_id": {"encoding": "hash", "buckets": 499, "embedding_dim": 8},
                "category": {"embedding_dim": 4},
                "position": {"embedding_dim": 2},
                "device": {"embedding_dim": 2},
                "hour_of_day": {"embedding_dim": 2},
                "day_of_week": {"embedding_dim": 2},
                "user_segment": {"embedding_dim": 2},
                "user_age_bucket": {"embedding_dim": 2},
                "user_region": {"embedding_dim": 2},
            },
            "numeric": numeric,
            "crosses": [
                {"features": ["user_segment", "category"], "buckets": 101},
                {"features": ["device", "hour_of_day"], "buckets": 101},
            ],
            "undeclared": "error",
        },
        "wide_deep": {"hidden_units": [32, 16]},
        "dcn": {"hidden_units": [32, 16], "num_cross_layers": 2},
        "training": {
            "batch_size": 256,
            "max_epochs": 4,
            "learning_rate": 0.005,
            "checkpoint_every_steps": 50,
            # Tiny matrices: a second thread costs more in synchronisation than it saves,
            # and far more when the other core is busy.
            "num_threads": 1,
            "progress": False,
        },
    }
    config = parse_model_config(data, "<small_model_config>")
    return config.with_overrides(overrides) if overrides else config
