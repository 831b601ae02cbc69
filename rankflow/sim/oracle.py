"""The simulator's ground truth, rebuilt for traffic the simulator never wrote.

The closed loop (rankflow/sim/replay.py) needs the true click probability of rows the
*service* chose (an item shown at the position a model ranked it at), and log replay needs the
simulator's next day. Both come from the same seeded truth the simulator used:
:meth:`Oracle.from_truth_dir` reads the simulation config from ``truth/simulation.json`` and
rebuilds the hidden parameters with the simulator's own ``load_truth`` (over the window plus a
horizon after it, so days served after the data ends have their users and items).

This is the only module outside the simulator that draws traffic with its internals
(``draw_requests``, ``day_pool``, ``_logit``, the per-date stream), so a change there is
absorbed here; probabilities of arbitrary rows go through the public ``true_logit``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from rankflow.data.contract import DEVICES
from rankflow.errors import RankflowError
from rankflow.sim import simulate as sim
from rankflow.sim.clicks import _logit, draw_requests, sigmoid
from rankflow.sim.population import STREAM_DAY, day_pool
from rankflow.times import day_start_epoch_us

# Days after the simulated window that traffic may be drawn for (closed loop, next-day replay).
HORIZON_DAYS = 60


class OracleError(RankflowError):
    """No usable simulation truth (not simulated, or another format); says what to run."""


@dataclass(frozen=True)
class DayTraffic:
    """One day of impressions in request order, with the truth: a frame with columns
    ``request_id, event_timestamp, user_id, item_id, category, position, device, hour_of_day,
    p_click, clicked``."""

    day: date
    day_index: int
    drifted: bool
    frame: pd.DataFrame


class Oracle:
    """True click probabilities of any (user, item, position, device, time) row."""

    def __init__(self, config: sim.SimulationConfig) -> None:
        self.config = config
        self.start = config.resolved_start_date()
        end = config.resolved_end_date() + timedelta(days=HORIZON_DAYS)
        self.truth = sim.load_truth(config, first=self.start, end=end)
        self.categories = np.array(sim.category_names(config.n_categories), dtype=object)

    @classmethod
    def from_truth_dir(cls, truth_dir: Path) -> Oracle:
        path = Path(truth_dir) / "simulation.json"
        if not path.is_file():
            raise OracleError(
                f"{path}: no simulation truth; the closed loop and next-day replay need simulated "
                "data (`rankflow simulate` or `source: simulate`)"
            )
        document = json.loads(path.read_text())
        if document.get("format_version") != sim.TRUTH_FORMAT_VERSION:
            raise OracleError(
                f"{path}: truth format_version {document.get('format_version')!r}, this code "
                f"reads {sim.TRUTH_FORMAT_VERSION}"
            )
        config = sim.SimulationConfig(**document["config"])
        # The truth file records the resolved window; pin it (end_date may have been "today").
        config = config.model_copy(
            update={"end_date": date.fromisoformat(document["end_date_exclusive"])}
        )
        return cls(config)

    # -------------------------------------------------------------------------- truth
    def day_index(self, day: date) -> int:
        return (day - self.start).days

    def drifted(self, day_index: int) -> bool:
        drift_day = self.config.drift_day
        return drift_day is not None and day_index >= drift_day

    def p_click(
        self,
        user_id: np.ndarray,
        item_id: np.ndarray,
        position: np.ndarray,
        device: np.ndarray,
        when: datetime,
    ) -> np.ndarray:
        """True P(click) per row at request time ``when`` (the contract's ids)."""
        n = len(user_id)
        day_index = self.day_index(when.date())
        try:
            logit = sim.true_logit(
                self.config,
                self.truth,
                np.asarray(user_id, dtype=np.int64),
                np.asarray(item_id, dtype=np.int64),
                np.asarray(position, dtype=np.int64),
                np.full(n, when.hour, dtype=np.int64),
                when.weekday(),
                np.asarray(device, dtype=object),
                drifted=self.drifted(day_index),
            )
        except KeyError as error:
            raise OracleError(f"p_click: {error.args[0]} is not a simulated entity") from None
        return sigmoid(logit)

    # ------------------------------------------------------------------------ traffic
    def default_impressions(self, day: date | None = None) -> int:
        return self.config.day_impressions(day or self.config.resolved_end_date())

    def day_traffic(self, day: date | None = None, n_impressions: int | None = None) -> DayTraffic:
        """The simulator's traffic for ``day`` (default: the day after the data ends).

        Drawn from the simulator's own per-day stream, so a day inside the simulated window
        with its original impression count reproduces what the simulator wrote.
        """
        cfg, truth = self.config, self.truth
        day = day or cfg.resolved_end_date()
        index = self.day_index(day)
        n = n_impressions or self.default_impressions(day)
        rng = np.random.default_rng([cfg.seed, STREAM_DAY, day.toordinal()])
        pool = day_pool(cfg, truth, day)
        requests = draw_requests(cfg, truth, pool, rng, n, day_start_epoch_us(day))
        drifted = self.drifted(index)
        p = sigmoid(_logit(cfg, truth, requests, day.weekday(), drifted=drifted))
        clicked = (rng.random(n) < p).astype(np.int8)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stamp = day.strftime("%Y%m%d")
        frame = pd.DataFrame(
            {
                "request_id": [f"rq-{stamp}-{r:07d}" for r in requests.request],
                "event_timestamp": [
                    midnight + timedelta(microseconds=int(us)) for us in requests.offset_us
                ],
                "user_id": truth.users.user_id[requests.user],
                "item_id": truth.items.item_id[requests.item],
                "category": self.categories[truth.items.category[requests.item]],
                "position": requests.position,
                "device": np.array(DEVICES, dtype=object)[requests.device],
                "hour_of_day": requests.hour,
                "p_click": p,
                "clicked": clicked,
            }
        )
        return DayTraffic(day=day, day_index=index, drifted=drifted, frame=frame)
