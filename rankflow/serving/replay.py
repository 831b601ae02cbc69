"""Traffic with a known truth through the scoring service (``rankflow replay``).

Two modes, both over the simulator's next day (the day after the data ends, the day the online
store's features are for) unless a day is given:

- **log replay** (``mode="log"``): each simulated request is sent as it happened (its user,
  device, time, items and the positions they were shown at); afterwards its labels (the
  simulator's clicks) are written beside the served log, keyed by (request id, item id), for
  the metric gap. With ``source: raw`` a held-out day of the user's own impressions can be
  replayed the same way (labels from the data, no true probabilities).
- **closed loop** (``mode="closed"``): the simulator offers each request's items as candidates,
  the service ranks them, the top ``k`` are shown at their ranked positions, and clicks are
  drawn from the truth for what was shown. Each arm gets an online CTR and an *expected* CTR
  (the mean true probability of what it showed: no sampling noise), next to the same request's
  expected CTR under the logged (random) order and under the oracle's own ranking.

Requests go in process (``ScoringService.score``) or over HTTP (``HttpScorer``); both return the
same response body. :func:`closed_loop` and :func:`log_replay` return per-arm results, which
the canary issue reads.
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
import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.errors import RankflowError

if TYPE_CHECKING:
    from rankflow.paths import StatePaths
    from rankflow.serving.service import ScoringService
    from rankflow.sim.oracle import Oracle

Scorer = Callable[[dict[str, Any]], dict[str, Any]]


class ReplayError(RankflowError):
    """Traffic cannot be replayed (no data for the day, the service refused requests)."""


# --------------------------------------------------------------------------------- clients
def in_process(service: ScoringService) -> Scorer:
    """Score through ``service`` directly (validated by the same request model as HTTP)."""
    from rankflow.serving.schemas import score_request_model

    model = score_request_model(service.config.serving.max_candidates)

    def score(body: dict[str, Any]) -> dict[str, Any]:
        return service.score(model.model_validate(body)).model_dump()

    return score


class HttpScorer:
    """``POST /score`` on a running service (keep-alive connection)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        import httpx

        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/score", json=body)
        if response.status_code != 200:
            raise ReplayError(f"/score answered {response.status_code}: {response.text[:300]}")
        return response.json()

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
def labels_dir(paths: StatePaths, service: str) -> Path:
    """Labels of replayed traffic, joined to the served log by (``__request_id``, item_id)."""
    return paths.root / "logs" / service / "labels"


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


class _Request:
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


def _requests(frame: pd.DataFrame, limit: int | None) -> Iterator[_Request]:
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
        yield _Request({name: values[start:end] for name, values in columns.items()})


def _body(group: _Request, request_id: str, with_positions: bool) -> dict[str, Any]:
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


def _traffic(
    frame: pd.DataFrame, max_requests: int | None, progress: bool, desc: str
) -> Iterator[_Request]:
    """The frame's requests in order, at most ``max_requests``, with a progress bar."""
    n_requests = frame["request_id"].nunique()
    total = min(n_requests, max_requests) if max_requests else n_requests
    with _progress(total, progress, desc) as bar:
        for group in _requests(frame, max_requests):
            yield group
            bar.update(1)


def _result(mode: str, day: date, arms: dict[str, ArmResult], labels: _Labels) -> tuple:
    result = ReplayResult(
        mode,
        day,
        sum(a.requests for a in arms.values()),
        sum(a.impressions for a in arms.values()),
        arms,
        None,
    )
    return result, labels.frame()


class _Labels:
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

    def add(self, request_id: str, items: Any, positions: Any, clicked: Any, p_true: Any) -> None:
        self.request_ids.append(request_id)
        self.sizes.append(len(items))
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
    labels = _Labels("log")
    for group in _traffic(frame, max_requests, progress, "log replay"):
        request_id = f"{run_id}-{group.first('request_id')}"
        response = score(_body(group, request_id, with_positions=True))
        p_logged = group["p_click"].astype(np.float64)
        arm = arms.setdefault(response["arm"], ArmResult())
        arm.requests += 1
        arm.impressions += len(group)
        arm.clicks += int(group["clicked"].sum())
        arm.sum_p_true += float(np.nansum(p_logged))
        arm.sum_p_served += float(sum(item["p_click"] for item in response["items"]))
        arm.versions.add(response["model"]["version"])
        labels.add(request_id, group["item_id"], group["position"], group["clicked"], p_logged)
    return _result("log", day, arms, labels)


def closed_loop(
    score: Scorer,
    oracle: Oracle,
    frame: pd.DataFrame,
    day: date,
    *,
    top_k: int | None = None,
    seed: int = 0,
    max_requests: int | None = None,
    progress: bool = False,
    run_id: str | None = None,
) -> tuple[ReplayResult, pd.DataFrame]:
    """Rank the simulator's candidates with the service, show the top ``k`` at their ranks, draw
    clicks from the truth; per-arm online and expected CTRs (see the module docstring)."""
    rng = np.random.default_rng([seed, 1])
    run_id = run_id or uuid.uuid4().hex[:8]
    arms: dict[str, ArmResult] = {}
    labels = _Labels("closed")
    for group in _traffic(frame, max_requests, progress, "closed loop"):
        request_id = f"{run_id}-{group.first('request_id')}"
        response = score(_body(group, request_id, with_positions=False))
        ranked = response["items"][: top_k or len(response["items"])]
        shown = np.array([item["item_id"] for item in ranked], dtype=np.int64)
        positions = np.arange(1, len(shown) + 1)
        when = pd.Timestamp(group.first("event_timestamp")).to_pydatetime()
        user, device = int(group.first("user_id")), str(group.first("device"))
        # One truth call for what was shown (at its ranks) and for every candidate at the top,
        # which gives the truth's own best order of the same candidates.
        candidates = group["item_id"].astype(np.int64)
        both = _truth(
            oracle,
            user,
            np.r_[shown, candidates],
            np.r_[positions, np.ones(len(candidates), np.int64)],
            device,
            when,
        )
        p_true, at_top = both[: len(shown)], both[len(shown) :]
        clicked = (rng.random(len(shown)) < p_true).astype(np.int32)
        best = candidates[np.argsort(-at_top, kind="stable")][: len(shown)]
        arm = arms.setdefault(response["arm"], ArmResult())
        arm.requests += 1
        arm.impressions += len(shown)
        arm.clicks += int(clicked.sum())
        arm.sum_p_true += float(p_true.sum())
        arm.sum_p_logged += float(group["p_click"][: len(shown)].astype(np.float64).sum())
        arm.sum_p_oracle += float(_truth(oracle, user, best, positions, device, when).sum())
        arm.sum_p_served += float(sum(item["p_click"] for item in ranked))
        arm.versions.add(response["model"]["version"])
        labels.add(request_id, shown, positions, clicked, p_true)
    return _result("closed", day, arms, labels)


def _truth(oracle: Oracle, user: int, items: Any, positions: Any, device: str, when: Any):
    n = len(items)
    devices = np.array([device] * n, dtype=object)
    return oracle.p_click(np.full(n, user), items, positions, devices, when)


def write_labels(paths: StatePaths, service: str, labels: pd.DataFrame, name: str) -> Path:
    folder = labels_dir(paths, service)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(labels, preserve_index=False), target)
    return target


def read_labels(paths: StatePaths, service: str) -> pd.DataFrame:
    folder = labels_dir(paths, service)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame(
            columns=["__request_id", "item_id", "position", "label", "p_true", "mode"]
        )
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def run_replay(
    settings: Any,
    config: Any,
    *,
    mode: str,
    url: str | None = None,
    day: date | None = None,
    impressions: int | None = None,
    max_requests: int | None = None,
    top_k: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ReplayResult:
    """``rankflow replay``: build the day's traffic, send it (HTTP if ``url``, else in process),
    write the labels beside the served log, and return the per-arm result."""
    from rankflow.sim.oracle import Oracle

    if mode not in ("log", "closed"):
        raise ReplayError(f"replay mode {mode!r}: expected 'log' or 'closed'")
    paths = settings.paths
    oracle = None
    if mode == "closed" or config.source == "simulate" or day is None:
        oracle = Oracle.from_truth_dir(paths.truth)
        traffic = oracle.day_traffic(day, impressions)
        frame, day = traffic.frame, traffic.day
    else:
        frame = raw_day_traffic(config.resolved_raw_dir(paths), day)
    service = None
    if url:
        score: Scorer = HttpScorer(url)
    else:
        from rankflow.serving.service import ScoringService

        service = ScoringService(settings, config)
        service.start(poll=False)
        if not service.ready:
            why = service.holder.last_error
            service.close()
            if why:  # a champion that cannot be loaded is not a missing one
                raise ReplayError(
                    f"@champion of {config.registry.serving_model!r} could not be loaded: {why}"
                )
            raise ReplayError(
                f"no @champion of {config.registry.serving_model!r} to serve; run `rankflow run`"
            )
        score = in_process(service)
    run_id = uuid.uuid4().hex[:8]
    try:
        if mode == "log":
            result, labels = log_replay(
                score, frame, day, max_requests=max_requests, progress=progress, run_id=run_id
            )
        else:
            assert oracle is not None
            result, labels = closed_loop(
                score,
                oracle,
                frame,
                day,
                top_k=top_k,
                seed=seed,
                max_requests=max_requests,
                progress=progress,
                run_id=run_id,
            )
    finally:
        if service is not None:
            service.close()  # flushes the served-feature log
        elif isinstance(score, HttpScorer):
            score.close()
    if len(labels):
        name = f"{day:%Y%m%d}-{mode}-{run_id}"
        result.labels_file = write_labels(paths, config.serving.feature_service, labels, name)
    return result
