"""The simulator's ground truth, rebuilt for traffic the simulator never wrote.

The closed loop (rankflow/serving/replay.py) needs the true click probability of rows the
*service* chose (an item shown at the position a model ranked it at), and log replay needs the
simulator's next day. Both come from the same seeded truth the simulator used:
:meth:`Oracle.from_truth_dir` reads the simulation config from ``truth/simulation.json`` and
rebuilds the hidden parameters with the simulator's own ``_build_truth``.

This is the only module outside simulate.py that touches the simulator's internals
(``_build_truth``, ``_draw_requests``, ``_logit``, ``_Requests``, the stream ids), so a change
there is absorbed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from rankflow.data import simulate as sim
from rankflow.data.contract import DEVICES
from rankflow.errors import RankflowError


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
        self.truth = sim._build_truth(config)
        self.categories = np.array(sim.category_names(config.n_categories), dtype=object)
        self.start = config.resolved_start_date()
        self._device_index = {name: i for i, name in enumerate(DEVICES)}

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
        """True P(click) per row at request time ``when`` (ids are the contract's, 1-based)."""
        user = np.asarray(user_id, dtype=np.int64) - 1
        item = np.asarray(item_id, dtype=np.int64) - 1
        if (user < 0).any() or (user >= self.config.n_users).any():
            raise OracleError("p_click: a user id outside the simulated users")
        if (item < 0).any() or (item >= self.config.n_items).any():
            raise OracleError("p_click: an item id outside the simulated items")
        n = len(user)
        devices = np.array([self._device_index[d] for d in device], dtype=np.int64)
        hour = np.full(n, when.hour, dtype=np.int64)
        requests = sim._Requests(
            offset_us=np.zeros(n, dtype=np.int64),
            request=np.zeros(n, dtype=np.int64),
            n_requests=1,
            user=user,
            item=item,
            position=np.asarray(position, dtype=np.int64),
            device=devices,
            hour=hour,
        )
        day_index = self.day_index(when.date())
        logit = sim._logit(
            self.config, self.truth, requests, when.weekday(), drifted=self.drifted(day_index)
        )
        return sim._sigmoid(logit)

    # ------------------------------------------------------------------------ traffic
    def default_impressions(self) -> int:
        return max(1, round(self.config.n_impressions / self.config.days))

    def day_traffic(self, day: date | None = None, n_impressions: int | None = None) -> DayTraffic:
        """The simulator's traffic for ``day`` (default: the day after the data ends).

        Drawn from the simulator's own per-day stream, so a day inside the simulated window
        with its original impression count reproduces what the simulator wrote.
        """
        cfg, truth = self.config, self.truth
        day = day or cfg.resolved_end_date()
        index = self.day_index(day)
        n = n_impressions or self.default_impressions()
        rng = np.random.default_rng([cfg.seed, sim._STREAM_DAY, index])
        requests = sim._draw_requests(cfg, truth, rng, n)
        drifted = self.drifted(index)
        p = sim._sigmoid(sim._logit(cfg, truth, requests, day.weekday(), drifted=drifted))
        clicked = (rng.random(n) < p).astype(np.int8)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        stamp = day.strftime("%Y%m%d")
        frame = pd.DataFrame(
            {
                "request_id": [f"rq-{stamp}-{r:07d}" for r in requests.request],
                "event_timestamp": [
                    midnight + timedelta(microseconds=int(us)) for us in requests.offset_us
                ],
                "user_id": requests.user + 1,
                "item_id": requests.item + 1,
                "category": self.categories[truth.item_category[requests.item]],
                "position": requests.position,
                "device": np.array(DEVICES, dtype=object)[requests.device],
                "hour_of_day": requests.hour,
                "p_click": p,
                "clicked": clicked,
            }
        )
        return DayTraffic(day=day, day_index=index, drifted=drifted, frame=frame)
