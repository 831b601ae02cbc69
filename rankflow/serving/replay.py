"""Traffic through the scoring service (``rankflow replay``): the clients, the request walk,
the per-arm results and the **log replay** of a day.

Log replay sends each request as it happened (its user, device, time, items and the positions
they were shown at); afterwards its labels (the clicks) are written beside the served log
(:mod:`rankflow.serving.labels`), keyed by (request id, item id), for the metric gap. A held-out
day of the user's own impressions (:func:`raw_day_traffic`) replays the same way, with labels
from the data and no true probabilities. Traffic with a known truth and the closed loop (the
service ranks, clicks are drawn from the truth) are the simulation's: :mod:`rankflow.sim.replay`.

Requests go in process (``ScoringService.score``) or over HTTP (``HttpScorer``); both return the
same response body.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from rankflow.errors import RankflowError

if TYPE_CHECKING:
    from rankflow.config import ScoringConfig
    from rankflow.serving.service import ScoringService
    from rankflow.settings import Settings

Scorer = Callable[[dict[str, Any]], dict[str, Any]]


class ReplayError(RankflowError):
    """Traffic cannot be replayed (no data for the day, the service refused requests)."""


# --------------------------------------------------------------------------------- clients
def in_process(service: ScoringService) -> Scorer:
    """Score through ``service`` directly (validated by the same request model as HTTP)."""
    from rankflow.serving.schemas import score_request_model

    model = score_request_model(service.serving.max_candidates)

    def score(body: dict[str, Any]) -> dict[str, Any]:
        return service.score(model.model_validate(body)).model_dump()

    return score


class HttpScorer:
    """``POST /score`` on a running service (keep-alive connection)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        import httpx

        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            response = self.client.post("/score", json=body)
        except httpx.TransportError as error:  # an operator's to fix, not a bug: one line
            raise ReplayError(self.unreachable(error)) from None
        if response.status_code != 200:
            raise ReplayError(f"/score answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def unreachable(self, error: Exception) -> str:
        """One line for a request that got no answer: where, why, and what to do."""
        import httpx

        url = str(self.client.base_url)
        if isinstance(error, httpx.ConnectError):
            return (
                f"no scoring service answers at {url} ({error}): start one with "
                "`rankflow serve`, or set RANKFLOW_SERVICE_URL to where it runs"
            )
        return f"the scoring service at {url} gave no answer: {type(error).__name__}: {error}"

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------------- results
@dataclass
class ArmResult:
    """One arm's traffic: what it showed, what was clicked, and (when known) the truth."""

    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    sum_p_true: float = 0.0  # true click probabilities of what was shown
    sum_p_logged: float = 0.0  # same requests, logged (simulator's random) order
    sum_p_oracle: float = 0.0  # same requests, the truth's own ranking
    sum_p_served: float = 0.0  # the model's predictions
    versions: set[str] = field(default_factory=set)

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")

    def mean(self, total: float) -> float:
        return total / self.impressions if self.impressions else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("sum_")}
        out["versions"] = sorted(self.versions)
        out["ctr"] = self.ctr
        out["mean_predicted"] = self.mean(self.sum_p_served)
        out["expected_ctr"] = self.mean(self.sum_p_true)
        out["expected_ctr_logged_order"] = self.mean(self.sum_p_logged)
        out["expected_ctr_oracle_order"] = self.mean(self.sum_p_oracle)
        return out


@dataclass
class ReplayResult:
    mode: str
    day: date
    requests: int
    impressions: int
    arms: dict[str, ArmResult]
    labels_file: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "day": str(self.day),
            "requests": self.requests,
            "impressions": self.impressions,
            "labels_file": str(self.labels_file) if self.labels_file else None,
            "arms": {arm: result.to_dict() for arm, result in sorted(self.arms.items())},
        }

    def summary(self) -> str:
        lines = [
            f"replay ({self.mode}) of {self.day}: {self.requests:,} requests, "
            f"{self.impressions:,} impressions"
        ]
        for arm, r in sorted(self.arms.items()):
            d = r.to_dict()
            line = (
                f"  {arm:<10} v{','.join(d['versions'])}: {r.requests:,} requests, CTR "
                f"{d['ctr']:.4f}, mean predicted {d['mean_predicted']:.4f}"
            )
            if self.mode == "closed":
                line += (
                    f", expected CTR {d['expected_ctr']:.4f} (logged order "
                    f"{d['expected_ctr_logged_order']:.4f}, oracle order "
                    f"{d['expected_ctr_oracle_order']:.4f})"
                )
            lines.append(line)
        if self.labels_file:
            lines.append(f"  labels        {self.labels_file}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------- traffic
def raw_day_traffic(raw_dir: Path, day: date) -> pd.DataFrame:
    """A day of the user's own impressions (contract layout) as replay traffic, no truth."""
    from rankflow.data.contract import partition_dir

    folder = partition_dir(raw_dir, "impressions", day)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise ReplayError(f"{folder}: no impressions for {day} to replay")
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    frame = frame.rename(columns={"ts": "event_timestamp"}).sort_values(["event_timestamp"])
    frame["p_click"] = np.nan
    return frame


class ReplayRequest:
    """One request's rows (each item once, in the order logged) as column arrays: the replay
    loop reads a few values per request, and a pandas group per request cost more than the
    service's own scoring of it."""

    __slots__ = ("columns",)

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self.columns = columns

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["item_id"])

    def first(self, name: str) -> Any:
        return self.columns[name][0]


def _requests(frame: pd.DataFrame, limit: int | None) -> Iterator[ReplayRequest]:
    """The frame's requests in order of first appearance, each item once (its first row)."""
    rows = frame.drop_duplicates(["request_id", "item_id"])
    if rows.empty:
        return
    codes, _ = pd.factorize(rows["request_id"], sort=False)  # numbered by first appearance
    order = np.argsort(codes, kind="stable")  # each request's rows together, in logged order
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    columns = {name: rows[name].to_numpy()[order] for name in rows.columns}
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if limit is not None and i >= limit:
            return
        yield ReplayRequest({name: values[start:end] for name, values in columns.items()})


def request_body(group: ReplayRequest, request_id: str, with_positions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": request_id,
        "user_id": int(group.first("user_id")),
        "item_ids": group["item_id"].astype(np.int64).tolist(),
        "device": str(group.first("device")),
        "time": pd.Timestamp(group.first("event_timestamp")).isoformat(),
    }
    if with_positions:
        body["positions"] = group["position"].astype(np.int64).tolist()
    return body


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="req", leave=False)


def traffic_requests(
    frame: pd.DataFrame, max_requests: int | None, progress: bool, desc: str
) -> Iterator[ReplayRequest]:
    """The frame's requests in order, at most ``max_requests``, with a progress bar."""
    n_requests = frame["request_id"].nunique()
    total = min(n_requests, max_requests) if max_requests else n_requests
    with _progress(total, progress, desc) as bar:
        for group in _requests(frame, max_requests):
            yield group
            bar.update(1)


def replay_result(
    mode: str, day: date, arms: dict[str, ArmResult], labels: ReplayLabels
) -> tuple[ReplayResult, pd.DataFrame]:
    """The replay's result (totals over the arms) and its labels as one frame."""
    result = ReplayResult(
        mode,
        day,
        sum(a.requests for a in arms.values()),
        sum(a.impressions for a in arms.values()),
        arms,
        None,
    )
    return result, labels.frame()


class ReplayLabels:
    """The replay's labels, gathered per request and made one frame at the end."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.parts: dict[str, list[np.ndarray]] = {
            "item_id": [],
            "position": [],
            "label": [],
            "p_true": [],
        }
        self.request_ids: list[str] = []
        self.sizes: list[int] = []

    def add(
        self,
        request_id: str,
        items: ArrayLike,
        positions: ArrayLike,
        clicked: ArrayLike,
        p_true: ArrayLike,
    ) -> None:
        self.request_ids.append(request_id)
        self.sizes.append(len(np.asarray(items)))
        for name, values in (
            ("item_id", items),
            ("position", positions),
            ("label", clicked),
            ("p_true", p_true),
        ):
            self.parts[name].append(np.asarray(values))

    def frame(self) -> pd.DataFrame:
        if not self.sizes:
            return pd.DataFrame()
        dtypes = {
            "item_id": np.int64,
            "position": np.int32,
            "label": np.int32,
            "p_true": np.float64,
        }
        return pd.DataFrame(
            {
                "__request_id": np.repeat(np.array(self.request_ids, dtype=object), self.sizes),
                **{k: np.concatenate(v).astype(dtypes[k]) for k, v in self.parts.items()},
                "mode": self.mode,
            }
        )


def log_replay(
    score: Scorer,
    frame: pd.DataFrame,
    day: date,
    *,
    max_requests: int | None = None,
    progress: bool = False,
    run_id: str | None = None,
) -> tuple[ReplayResult, pd.DataFrame]:
    """Send each request as it happened; return the result and the labels to write."""
    run_id = run_id or uuid.uuid4().hex[:8]
    arms: dict[str, ArmResult] = {}
    labels = ReplayLabels("log")
    for group in traffic_requests(frame, max_requests, progress, "log replay"):
        request_id = f"{run_id}-{group.first('request_id')}"
        response = score(request_body(group, request_id, with_positions=True))
        p_logged = group["p_click"].astype(np.float64)
        arm = arms.setdefault(response["arm"], ArmResult())
        arm.requests += 1
        arm.impressions += len(group)
        arm.clicks += int(group["clicked"].sum())
        arm.sum_p_true += float(np.nansum(p_logged))
        arm.sum_p_served += float(sum(item["p_click"] for item in response["items"]))
        arm.versions.add(response["model"]["version"])
        labels.add(request_id, group["item_id"], group["position"], group["clicked"], p_logged)
    return replay_result("log", day, arms, labels)


def start_service(
    settings: Settings, scoring: ScoringConfig, *, canary_share: float | None = None
) -> ScoringService:
    """The scoring service in process, following the aliases, or a one-line error: a champion
    that cannot be loaded is not a missing one. ``canary_share``: as ScoringService takes it."""
    from rankflow.serving.service import ScoringService

    service = ScoringService(settings, scoring, canary_share=canary_share)
    service.start(poll=False)
    if service.ready:
        return service
    why = service.holder.last_error
    service.close()
    if why:
        raise ReplayError(f"@champion of {scoring.model_name!r} could not be loaded: {why}")
    raise ReplayError(f"no @champion of {scoring.model_name!r} to serve; run `rankflow run`")
