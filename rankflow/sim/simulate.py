"""Click-log simulator: writes the raw-data contract together with a known ground truth.

Every impression gets a true click probability from a logistic model whose parts are the
kinds of signal a ranking model is expected to find (docs/data-contract.md, "Simulator"; the
formula is in rankflow/sim/clicks.py). ``base`` is solved so the overall CTR hits
``target_ctr``. The click label is a Bernoulli draw from ``p_click``; the oracle AUC / log loss
(true probabilities vs drawn labels) is the ceiling every model metric is compared with.

The window appends: a day's impressions come from a random stream keyed by its calendar date,
and users and items from cohorts keyed by their arrival day (rankflow/sim/population.py), so
a later ``end_date`` writes byte-identical files for every day the two windows share, adds
the new days and drops the oldest ones (``days`` is fixed): a daily run on ``end_date: null``
adds one day. Users and items arrive and leave during the window (cold start and growth);
``new_user_traffic_share`` of each day's requests comes from users in their first days.
Turning drift on changes nothing before ``drift_day``. Days are generated one at a time, so
memory is bounded by the largest day, and each folder is replaced atomically by a rename.

Public entry points: ``simulate`` (write a dataset), ``load_truth`` and ``true_logit`` (true
click logits of arbitrary rows, for oracles and closed-loop traffic).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.atomic import replace_dir
from models.metrics import auc, logloss
from rankflow.data.contract import DEVICES, arrow_schema, partition_dir
from rankflow.sim.clicks import (
    _logit,
    _Requests,
    draw_requests,
    load_truth,
    sigmoid,
    traffic_by_hour,
    true_logit,
)
from rankflow.sim.config import (
    AGE_BUCKETS,
    ANCHOR_DATE,
    REGIONS,
    SEGMENTS,
    SimulationConfig,
    category_names,
)
from rankflow.sim.population import STREAM_DAY, Truth, day_pool, epoch_us

__all__ = [
    "MARKER_FILE",
    "SimulationConfig",
    "SimulationSummary",
    "Truth",
    "_Requests",
    "_logit",
    "category_names",
    "load_truth",
    "simulate",
    "true_logit",
]

log = logging.getLogger(__name__)

TRUTH_FORMAT_VERSION: Final = 2
MARKER_FILE: Final = ".rankflow-simulation"


@dataclass(frozen=True)
class SimulationSummary:
    """What ``simulate`` wrote; equal for equal configs and folders."""

    seed: int
    n_users: int  # users alive at some point of the window (the users file)
    n_items: int
    new_users: int  # of which signed up inside the window
    new_items: int
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
                f"{self.n_users:,} users ({self.new_users:,} new), {self.n_items:,} items "
                f"({self.new_items:,} new) (seed {self.seed})",
                f"  days          {self.start_date} .. {self.end_date - timedelta(days=1)}",
                f"  clicks        {self.n_clicks:,} (CTR {self.positive_rate:.4f})",
                f"  oracle        AUC {self.oracle_auc:.4f}, log loss {self.oracle_logloss:.4f}",
                f"  drift         {drift}",
                f"  raw           {self.raw_dir}",
                f"  truth         {self.truth_dir}",
            ]
        )


# --------------------------------------------------------------------------------------------
# Writing


def _ids(prefix: str, index: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(index), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def _labelled(values: np.ndarray, vocabulary: tuple[str, ...] | list[str]) -> pa.Array:
    """Strings from indices; an index equal to len(vocabulary) is null."""
    vocab = np.array([*vocabulary, ""], dtype=object)
    return pa.array(vocab[values], type=pa.string(), mask=values == len(vocabulary))


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype(np.int64), type=pa.timestamp("us", tz="UTC"))


def _write_entities(cfg: SimulationConfig, truth: Truth, raw: Path, truth_dir: Path) -> None:
    """Every user and item alive in the window, with signup / creation times from their
    cohorts (some inside the window), plus their hidden parameters under truth/."""
    u, i = truth.users, truth.items
    users = pa.Table.from_arrays(
        [
            pa.array(u.user_id),
            _labelled(u.segment, SEGMENTS),
            _labelled(u.age, AGE_BUCKETS),
            _labelled(u.region, REGIONS),
            _timestamps(u.signup_us),
        ],
        schema=arrow_schema("users"),
    )
    items = pa.Table.from_arrays(
        [
            pa.array(i.item_id),
            _labelled(i.category, category_names(cfg.n_categories)),
            pa.array(i.price),
            _timestamps(i.created_us),
        ],
        schema=arrow_schema("items"),
    )
    for folder, name, table in ((raw / "users", "users", users), (raw / "items", "items", items)):
        folder.mkdir(parents=True)
        pq.write_table(table, folder / f"{name}.parquet")

    # Hidden per-entity parameters, for analysis only (no feature may read truth/).
    user_truth = {
        "user_id": u.user_id,
        "user_bias": u.bias,
        "activity": u.activity,
        "last_active_date": _dates(u.last_day),
        "preferred_device": _labelled(u.device, DEVICES),
        "taste_drifts": u.drifts,
    }
    user_truth |= {f"taste_{k}": u.taste[:, k] for k in range(cfg.latent_dim)}
    user_truth |= {f"taste_drifted_{k}": u.taste_drifted[:, k] for k in range(cfg.latent_dim)}
    item_truth = {
        "item_id": i.item_id,
        "quality": i.quality,
        "popularity": i.popularity,
        "last_listed_date": _dates(i.last_day),
        "log_price_z": i.log_price_z,
    }
    item_truth |= {f"vector_{k}": i.vector[:, k] for k in range(cfg.latent_dim)}
    pq.write_table(pa.table(user_truth), truth_dir / "users.parquet")
    pq.write_table(pa.table(item_truth), truth_dir / "items.parquet")


def _dates(ordinals: np.ndarray) -> pa.Array:
    days = ordinals - date(1970, 1, 1).toordinal()
    return pa.array(days.astype(np.int32), type=pa.date32())


@dataclass
class _DayResult:
    n_requests: int
    clicked: np.ndarray
    p_click: np.ndarray
    users: np.ndarray


def _write_day(
    cfg: SimulationConfig, truth: Truth, day_index: int, day: date, raw: Path, truth_dir: Path
) -> _DayResult:
    """One day's impressions and their true p_click, from the day's own date-keyed stream."""
    rng = np.random.default_rng([cfg.seed, STREAM_DAY, day.toordinal()])
    n = cfg.day_impressions(day)
    requests = draw_requests(cfg, truth, day_pool(cfg, truth, day), rng, n, epoch_us(day))
    drifted = cfg.drift_day is not None and day_index >= cfg.drift_day
    p_click = sigmoid(_logit(cfg, truth, requests, day.weekday(), drifted=drifted))
    clicked = (rng.random(n) < p_click).astype(np.int8)

    stamp = day.strftime("%Y%m%d")
    event_id = _ids(f"ev-{stamp}-", np.arange(n), 8)
    impressions = pa.Table.from_arrays(
        [
            event_id,
            _ids(f"rq-{stamp}-", requests.request, 7),
            _timestamps(epoch_us(day) + requests.offset_us),
            pa.array(truth.users.user_id[requests.user], type=pa.int64()),
            pa.array(truth.items.item_id[requests.item], type=pa.int64()),
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
    return _DayResult(requests.n_requests, clicked, p_click, requests.user)


def _truth_parameters(cfg: SimulationConfig, truth: Truth) -> dict[str, Any]:
    e = truth.effects
    return {
        "base_logit": e.base_logit,
        "vocabularies": {
            "segment": list(SEGMENTS),
            "age_bucket": list(AGE_BUCKETS),
            "region": list(REGIONS),
            "device": list(DEVICES),
            "category": category_names(cfg.n_categories),
        },
        "effects": {
            "position": e.position[1:].tolist(),
            "hour": e.hour.tolist(),
            "day_of_week": e.day_of_week.tolist(),
            "segment_category": e.segment_category.tolist(),
            "segment_category_after_drift": e.segment_category_drifted.tolist(),
            "segment_price_slope": e.segment_price.tolist(),
            "age_category": e.age_category[:-1].tolist(),
            "device_hour": e.device_hour.tolist(),
            "segment_category_device": e.segment_category_device.tolist(),
            "latent_strength": cfg.latent_strength,
        },
        "population": {
            "anchor_date": str(ANCHOR_DATE),
            "user_signups_per_day": cfg.n_users / cfg.user_lifetime_days,
            "new_items_per_day": cfg.n_items / cfg.item_lifetime_days,
            "new_user_traffic_share": cfg.new_user_traffic_share,
        },
        "hourly_traffic_share": traffic_by_hour().tolist(),
        "users_with_drifting_taste": int(truth.users.drifts.sum()),
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


# --------------------------------------------------------------------------------------------
# Entry point


def simulate(config: SimulationConfig, raw_dir: Path, truth_dir: Path) -> SimulationSummary:
    """Write a simulated dataset in the raw-data contract to ``raw_dir`` and its ground truth to
    ``truth_dir``, replacing any previous simulation there; return what was written.

    Days the previous window shares with this one come out byte-identical (date-keyed
    streams); days that left the window are gone from both folders."""
    raw_dir, truth_dir = Path(raw_dir).resolve(), Path(truth_dir).resolve()
    if raw_dir == truth_dir or raw_dir in truth_dir.parents or truth_dir in raw_dir.parents:
        raise ValueError(
            f"raw_dir ({raw_dir}) and truth_dir ({truth_dir}) must be separate folders"
        )
    for target in (raw_dir, truth_dir):
        _check_replaceable(target)

    start, end = config.resolved_start_date(), config.resolved_end_date()
    truth = load_truth(config, start, end)
    marker = json.dumps({"seed": config.seed, "start_date": str(start), "end_date": str(end)})

    with _staged(raw_dir) as raw, _staged(truth_dir) as truth_out:
        _write_entities(config, truth, raw, truth_out)
        labels, probabilities, daily = _write_days(config, truth, raw, truth_out)
        y, p = np.concatenate(labels), np.concatenate(probabilities)
        summary = SimulationSummary(
            seed=config.seed,
            n_users=len(truth.users.user_id),
            n_items=len(truth.items.item_id),
            new_users=int((truth.users.signup_day >= start.toordinal()).sum()),
            new_items=int((truth.items.created_day >= start.toordinal()).sum()),
            n_requests=sum(d["requests"] for d in daily),
            n_impressions=len(y),
            n_clicks=int(y.sum()),
            positive_rate=float(y.mean()),
            start_date=start,
            end_date=end,
            drift_day=config.drift_day,
            base_logit=truth.effects.base_logit,
            oracle_auc=auc(y, p),
            oracle_logloss=logloss(y, p),
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
        replace_dir(truth_out, truth_dir)
        replace_dir(raw, raw_dir)
    return summary


def _write_days(
    config: SimulationConfig, truth: Truth, raw: Path, truth_out: Path
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    start = config.resolved_start_date()
    labels, probabilities, daily = [], [], []
    for d in range(config.days):
        day = start + timedelta(days=d)
        result = _write_day(config, truth, d, day, raw, truth_out)
        labels.append(result.clicked)
        probabilities.append(result.p_click)
        signed_up = truth.users.signup_day == day.toordinal()
        daily.append(
            {
                "date": str(day),
                "drifted": config.drift_day is not None and d >= config.drift_day,
                "requests": result.n_requests,
                "impressions": len(result.clicked),
                "clicks": int(result.clicked.sum()),
                "active_users": len(np.unique(result.users)),
                "signups": int(signed_up.sum()),
                "mean_p_click": float(result.p_click.mean()),
                "oracle_auc": auc(result.clicked, result.p_click),
                "oracle_logloss": logloss(result.clicked, result.p_click),
            }
        )
        log.debug("simulated %s: %d impressions", day, len(result.clicked))
    return labels, probabilities, daily
