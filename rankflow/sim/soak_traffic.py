"""A day of traffic as a real front end sends it, over HTTP to ``rankflow serve``.

The base is the log replay of the simulator's day (:mod:`rankflow.serving.replay`: each
request as it happened, labels from the truth afterwards). Mixed in, each drawn per request
from a seeded stream:

- **retries**: the same body sent again, same request id (a client that timed out and retried;
  the service logs the rows twice, the gap check keeps each once);
- **explicit past times**: a copy of a request stamped two days back, which the online store
  cannot answer (the service's point-in-time 422: refused, so never acknowledged or logged);
- **unknown ids**: a user and an item that no build has seen (scored with the training
  defaults, logged, never labelled: the truth does not know them either);
- **no labels**: requests whose clicks never come back (plain ``/score`` traffic).

``midday`` runs once, halfway through the requests: the soak's scheduled fault of the day.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd

from rankflow.serving.labels import write_labels
from rankflow.serving.replay import ReplayLabels, request_body, traffic_requests

if TYPE_CHECKING:
    from pathlib import Path

    from rankflow.paths import StatePaths
    from rankflow.sim.oracle import DayTraffic

# Far above any id the simulator hands out (they count up from a 1990 anchor).
UNKNOWN_ID_BASE = 9_000_000_000


@dataclass(frozen=True)
class TrafficMix:
    """Shares of the production-shaped extras (each per request, independent draws)."""

    retry_share: float = 0.05
    past_time_share: float = 0.01
    unknown_share: float = 0.02
    unlabelled_share: float = 0.2
    past_days: int = 2


@dataclass
class TrafficTally:
    """What the client sent and what the service answered, for the day's row."""

    requests: int = 0
    acknowledged_requests: int = 0
    acknowledged_rows: int = 0  # items of every 200 answer: each must be logged or counted
    retries: int = 0
    past_time_sent: int = 0
    past_time_refused: int = 0
    unknown_sent: int = 0
    unlabelled: int = 0
    labelled_rows: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # status -> count (unexpected)
    latencies: list[float] = field(default_factory=list)
    labels_file: Path | None = None

    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies, 99) * 1000) if self.latencies else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("latencies", "labels_file")}
        out["p99_ms"] = self.p99_ms()
        out["labels_file"] = str(self.labels_file) if self.labels_file else None
        return out


class FrontEnd:
    """Posts bodies to ``/score``, timing each and tallying the answers."""

    def __init__(self, url: str, tally: TrafficTally) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30.0)
        self.tally = tally

    def post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer's body on a 200 (the rows acknowledged), None otherwise (tallied)."""
        started = time.perf_counter()
        try:
            response = self.client.post("/score", json=body)
        except httpx.HTTPError as error:
            self._fail(type(error).__name__)
            return None
        self.tally.requests += 1
        if response.status_code != 200:
            self._fail(str(response.status_code))
            return None
        self.tally.latencies.append(time.perf_counter() - started)
        answer = response.json()
        self.tally.acknowledged_requests += 1
        self.tally.acknowledged_rows += len(answer["items"])
        return answer

    def _fail(self, kind: str) -> None:
        self.tally.failures[kind] = self.tally.failures.get(kind, 0) + 1

    def close(self) -> None:
        self.client.close()


def _past_copy(body: dict[str, Any], days: int) -> dict[str, Any]:
    when = pd.Timestamp(body["time"]) - timedelta(days=days)
    return {**body, "request_id": f"{body['request_id']}-past", "time": when.isoformat()}


def _unknown_copy(body: dict[str, Any], serial: int) -> dict[str, Any]:
    unknown_item = UNKNOWN_ID_BASE + serial
    items = [*body["item_ids"], unknown_item]
    out = {**body, "request_id": f"{body['request_id']}-unknown", "item_ids": items}
    out["user_id"] = UNKNOWN_ID_BASE + serial
    out["positions"] = [*body["positions"], len(items)]
    return out


def send_day(
    url: str,
    paths: StatePaths,
    service: str,
    traffic: DayTraffic,
    *,
    mix: TrafficMix,
    seed: int,
    midday: Callable[[TrafficTally], None] | None = None,
) -> TrafficTally:
    """Send ``traffic`` with ``mix``'s extras; write the labels of the labelled requests."""
    rng = np.random.default_rng([seed, traffic.day.toordinal()])
    tally = TrafficTally()
    labels = ReplayLabels("log")
    run_id = uuid.uuid4().hex[:8]
    n_requests = traffic.frame["request_id"].nunique()
    front = FrontEnd(url, tally)
    try:
        for i, group in enumerate(traffic_requests(traffic.frame, None, False, "soak")):
            if midday is not None and i == n_requests // 2:
                midday(tally)
            body = request_body(group, f"{run_id}-{group.first('request_id')}", True)
            answer = front.post(body)
            draws = rng.random(4)
            if answer is not None and draws[0] < mix.retry_share:
                tally.retries += 1
                front.post(body)  # same id, same time: the log holds it twice
            if draws[1] < mix.past_time_share:
                tally.past_time_sent += 1
                before = tally.failures.get("422", 0)
                front.post(_past_copy(body, mix.past_days))
                tally.past_time_refused += tally.failures.get("422", 0) - before
            if draws[2] < mix.unknown_share:
                tally.unknown_sent += 1
                front.post(_unknown_copy(body, i))
            if answer is None:
                continue
            if draws[3] < mix.unlabelled_share:
                tally.unlabelled += 1
                continue
            items, positions = group["item_id"], group["position"]
            labels.add(body["request_id"], items, positions, group["clicked"], group["p_click"])
            tally.labelled_rows += len(items)
    finally:
        front.close()
    frame = labels.frame()
    if len(frame):
        name = f"{traffic.day:%Y%m%d}-soak-{run_id}"
        tally.labels_file = write_labels(paths, service, frame, name)
    # Refused past times are expected answers, not failures of the day.
    expected = tally.failures.pop("422", 0) - tally.past_time_refused
    if expected:
        tally.failures["422"] = expected
    return tally
