"""The scoring service's core, without HTTP: one :class:`ScoringService` per process.

``score(request)`` is the whole request path: pick the arm (stable hash of the user id), look
up each item's category, read the feature service online (Feast SDK in process), apply the TTL
rule, transform without pandas, score, rank, and queue the served rows for the log. The FastAPI
app (rankflow/serving/app.py) and the in-process replay both call it, so they cannot differ.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

# Metrics before anything that imports Feast (rankflow/serving/metrics.py says why).
from rankflow.serving.metrics import ServiceMetrics  # isort: skip

from rankflow.errors import RankflowError
from rankflow.serving.holder import LoadedModel, ModelHolder
from rankflow.serving.lookup import (
    JOIN_KEYS,
    REQUEST_FIELDS,
    UNKNOWN_CATEGORY,
    OnlineLookup,
    Served,
)
from rankflow.serving.schemas import ModelRef, ScoredItem, ScoreRequestBase, ScoreResponse
from rankflow.serving.served_log import (
    LOG_DATE,
    LOG_TIMESTAMP,
    REQUEST_ID,
    SERVED_AT,
    LogBatch,
    ServedLogWriter,
    bind_logging_destination,
    log_schema,
    log_sink,
    score_log_dir,
    served_log_dir,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from rankflow.config import ScoringConfig
    from rankflow.settings import Settings

log = logging.getLogger(__name__)


class NoModelError(RankflowError):
    """No ``@champion`` to serve: none yet (train one: ``rankflow run``), or it was refused."""


@dataclass
class _Rows:
    columns: dict[str, list[Any]]
    unknown_items: int


class ScoringService:
    """Store, models, log writer and metrics of one serving process."""

    def __init__(
        self,
        settings: Settings,
        scoring: ScoringConfig,
        *,
        store: FeatureStore | None = None,
        metrics: ServiceMetrics | None = None,
        pinned: dict[str, str] | None = None,
        canary_share: float | None = None,
    ) -> None:
        """``pinned``: arm -> version to serve instead of following the aliases (the canary
        phase); None follows ``@champion`` / ``@challenger``. ``canary_share``: the share of
        users sent to the challenger, instead of ``serving.canary_share`` (the simulated
        canary phase splits its in-process traffic by ``canary.share``)."""
        from mlflow import MlflowClient

        from rankflow.features.store import bound_online_waits, get_store
        from rankflow.tracking.setup import resolve_tracking_uri

        self.settings = settings
        self.scoring = scoring
        self.serving = scoring.serving
        self.metrics = metrics or ServiceMetrics()
        paths = settings.paths
        self.store = store or get_store(settings)
        if store is None:  # a caller's own store keeps the waits its caller chose
            bound_online_waits(self.store, self.serving.online_timeout_seconds)
        self.lookup = OnlineLookup(
            self.store,
            scoring.feature_service,
            enforce_ttl=self.serving.enforce_ttl,
            point_in_time_tolerance=timedelta(seconds=self.serving.point_in_time_tolerance_seconds),
            category_cache_seconds=self.serving.category_cache_seconds,
            serialize_reads=self.store.config.online_store.type == "sqlite",
            on_demand_in_process=self.serving.on_demand_in_process,
        )
        uri = resolve_tracking_uri(scoring.tracking, settings)
        self.holder = ModelHolder(
            lambda: MlflowClient(tracking_uri=uri, registry_uri=uri),
            scoring.model_name,
            paths.serving_models,
            feature_service=scoring.feature_service,
            canary_share=self.serving.canary_share if canary_share is None else canary_share,
            poll_seconds=self.serving.alias_poll_seconds,
            on_swap=self._on_swap,
            pinned=pinned,
        )
        self.writer: ServedLogWriter | None = None
        if self.serving.log.enabled:
            service = bind_logging_destination(
                self.lookup.service, served_log_dir(paths, scoring.feature_service)
            )
            self.writer = ServedLogWriter(
                log_schema(self.store, service),
                log_sink(service, score_log_dir(paths, scoring.feature_service)),
                buffer_rows=self.serving.log.buffer_rows,
                flush_rows=self.serving.log.flush_rows,
                flush_seconds=self.serving.log.flush_seconds,
                metrics=self.metrics,
            )
        self._view_of = {name: slot.view for name, slot in self.lookup.slots.items()}

    # ------------------------------------------------------------------------ lifecycle
    def start(self, *, poll: bool = True) -> None:
        """Load the current aliases (a missing champion is not fatal: /readyz says so).

        Sets torch to one intra-op thread for the process: a request is 1-200 rows, where extra
        threads only add hand-offs (on this 2-core machine a 7-row DCN forward took 34 ms with
        the default threads and well under 1 ms with one).
        """
        import torch

        torch.set_num_threads(1)
        try:
            self.holder.refresh()
        except Exception as error:
            log.warning("could not read the registry at start: %s", error)
            self.holder.last_error = str(error)
        if poll:
            self.holder.start()
        if self.writer is not None:
            self.writer.start()

    def close(self) -> None:
        self.holder.stop()
        if self.writer is not None:
            self.writer.close()
        from rankflow.features.store import release

        release(self.store)

    @property
    def ready(self) -> bool:
        return self.holder.choose(0) is not None

    def _on_swap(self, arm: str, old: LoadedModel | None, new: LoadedModel | None) -> None:
        if old is not None:
            self.metrics.model_version.remove(arm, old.name, old.version)
        if new is not None:
            self.metrics.model_version.labels(arm, new.name, new.version).set(1)
        if old is not None:
            self.metrics.model_swaps.labels(arm).inc()

    # ------------------------------------------------------------------------ requests
    def score(self, request: ScoreRequestBase) -> ScoreResponse:
        started = time.perf_counter()
        chosen = self.holder.choose(request.user_id)
        if chosen is None:
            if self.holder.last_error:  # e.g. a champion trained on another feature service
                raise NoModelError(
                    f"no @champion of {self.scoring.model_name!r} loaded: {self.holder.last_error}"
                )
            raise NoModelError(
                f"no @champion of {self.scoring.model_name!r} in the registry yet; "
                "train one first (`rankflow run`)"
            )
        arm, model = chosen
        when = request.request_time()
        rows = self._rows(request, when)
        served = self.lookup.fetch(
            rows.columns, when, len(request.item_ids), point_in_time=request.time is not None
        )
        columns = {**rows.columns, **served.values}
        columns["category"] = [c or None for c in rows.columns["category"]]
        columns["day_of_week"] = [when.isoweekday()] * len(request.item_ids)
        p_click = model.predict(columns)
        order = np.argsort(-p_click, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        request_id = request.request_id or uuid.uuid4().hex
        if self.writer is not None:
            self.writer.submit(
                self._log_batch(request_id, when, rows, served, p_click, rank, arm, model)
            )
        missing = sum(served.missing.values())
        self._count(arm, len(order), served, rows.unknown_items, time.perf_counter() - started)
        return ScoreResponse(
            request_id=request_id,
            arm=arm,
            model=ModelRef(name=model.name, version=model.version, kind=model.kind),
            items=[
                ScoredItem(
                    item_id=request.item_ids[i], p_click=float(p_click[i]), rank=int(rank[i])
                )
                for i in order
            ],
            unknown_user=bool(served.unknown_users),
            unknown_items=rows.unknown_items,
            missing_features=missing,
        )

    def _rows(self, request: ScoreRequestBase, when: datetime) -> _Rows:
        n = len(request.item_ids)
        categories = self.lookup.categories(request.item_ids)
        positions = request.positions or [self.serving.score_position] * n
        return _Rows(
            columns={
                "user_id": [request.user_id] * n,
                "item_id": list(request.item_ids),
                "category": [c if c is not None else UNKNOWN_CATEGORY for c in categories],
                "position": list(positions),
                "device": [request.device] * n,
                "hour_of_day": [when.hour] * n,
            },
            unknown_items=sum(c is None for c in categories),
        )

    def _log_batch(
        self,
        request_id: str,
        when: datetime,
        rows: _Rows,
        served: Served,
        p_click: np.ndarray,
        rank: np.ndarray,
        arm: str,
        model: LoadedModel,
    ) -> LogBatch:
        n = len(p_click)
        features: dict[str, list[Any]] = {k: rows.columns[k] for k in (*JOIN_KEYS, *REQUEST_FIELDS)}
        for name, values in served.values.items():
            prefix = f"{self._view_of[name]}__{name}"
            features[prefix] = values
            features[f"{prefix}__timestamp"] = served.timestamps[name]
            features[f"{prefix}__status"] = served.statuses[name]
        features[LOG_TIMESTAMP] = [when] * n
        features[LOG_DATE] = [when.date()] * n
        features[REQUEST_ID] = [request_id] * n
        scores = {
            REQUEST_ID: [request_id] * n,
            LOG_TIMESTAMP: [when] * n,
            SERVED_AT: [datetime.now(UTC)] * n,
            "user_id": rows.columns["user_id"],
            "item_id": rows.columns["item_id"],
            "position": rows.columns["position"],
            "p_click": p_click.tolist(),
            "rank": rank.tolist(),
            "model_name": [model.name] * n,
            "model_version": [model.version] * n,
            "model_kind": [model.kind] * n,
            "arm": [arm] * n,
        }
        return LogBatch(features, scores)

    def _count(self, arm: str, n: int, served: Served, unknown_items: int, seconds: float) -> None:
        m = self.metrics
        m.arm_requests.labels(arm).inc()
        m.scored_items.labels(arm).inc(n)
        m.latency.labels(arm).observe(seconds)
        for (view, reason), count in served.missing.items():
            m.missing_features.labels(view, reason).inc(count)
        if served.unknown_users:
            m.unknown_entities.labels("user").inc()
        if unknown_items:
            m.unknown_entities.labels("item").inc(unknown_items)
