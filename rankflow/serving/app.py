"""The scoring service's HTTP face: ``POST /score``, ``/healthz``, ``/readyz``, ``/metrics``.

``create_app(settings, scoring)`` builds a FastAPI app around one
:class:`~rankflow.serving.service.ScoringService` (opened in the app's lifespan, closed with a
last log flush on shutdown). Bad input is always a 4xx whose ``detail`` names the field
(``item_ids: List should have at most 200 items``), never a 5xx; a ``time`` the online store
cannot answer is a 422 too; a body over ``serving.max_body_bytes`` is a 413 before it is parsed
(rankflow/serving/body_limit.py). A request before any champion exists is a 503, and so is one
that meets an unreadable online store (with ``Retry-After``). ``rankflow serve`` runs it with
uvicorn on loopback by default.
"""

# Metrics before anything that imports Feast (rankflow/serving/metrics.py says why).
from rankflow.serving.metrics import CONTENT_TYPE, ServiceMetrics  # isort: skip

import gc
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from rankflow.config import ScoringConfig
from rankflow.errors import RankflowError
from rankflow.serving.body_limit import BodyLimit
from rankflow.serving.lookup import OnlineStoreUnavailable, PointInTimeError
from rankflow.serving.schemas import ScoreResponse, score_request_model
from rankflow.serving.service import NoModelError, ScoringService
from rankflow.settings import Settings

log = logging.getLogger(__name__)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """One line naming every bad field: ``item_ids.3: Input should be a valid integer``."""
    return "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', '')}" for e in errors)


async def _get_service(request: Request) -> ScoringService:
    # async so FastAPI resolves it on the event loop: a plain def dependency costs every request
    # a hop through the thread pool before /score's own (limited) hop to score it.
    return request.app.state.service


Service = Annotated[ScoringService, Depends(_get_service)]


def create_app(
    settings: Settings,
    scoring: ScoringConfig,
    *,
    service: ScoringService | None = None,
    poll: bool = True,
    freeze_gc: bool = False,
) -> FastAPI:
    """The app; ``service`` lets a caller (the benchmark) share an already open one.

    ``freeze_gc`` (``rankflow serve``, a process that only serves): once the service is open,
    move every object alive then (Feast, torch, MLflow, the model: ~480k objects) out of the
    collector's reach with :func:`gc.freeze`. Otherwise each full collection walks them all,
    ~300 ms with the GIL held, and every request in flight waits (bench_serving at 8 clients,
    on requests whose keys the store did not hold: p99 310 ms with, 24 ms without the served
    log's allocations triggering them); frozen, a full collection takes ~25 ms. Not for a shared process (tests, the benchmark's in-process
    service): frozen objects are never freed."""
    metrics = service.metrics if service is not None else ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = service or ScoringService(settings, scoring, metrics=metrics)
        if owned:
            app.state.service.start(poll=poll)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if owned:
                app.state.service.close()

    app = FastAPI(title="rankflow scoring service", lifespan=lifespan)

    def _too_large(path: str) -> None:
        metrics.errors.labels("too_large").inc()
        metrics.requests.labels(path, "413").inc()

    app.add_middleware(BodyLimit, max_bytes=scoring.serving.max_body_bytes, on_refused=_too_large)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("validation").inc()
        metrics.requests.labels(request.url.path, "422").inc()
        errors = [
            {k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in error.errors()
        ]
        return JSONResponse(
            status_code=422, content={"detail": validation_detail(errors), "errors": errors}
        )

    _score_route(
        app,
        metrics,
        score_request_model(scoring.serving.max_candidates),
        scoring.serving.scoring_threads,
        retry_after=max(1, math.ceil(scoring.serving.online_timeout_seconds)),
    )
    _probe_routes(app, metrics, scoring)
    return app


def _score_route(
    app: FastAPI, metrics: ServiceMetrics, request_model: type, threads: int, *, retry_after: int
) -> None:
    # Scoring is CPU-bound Python: run in FastAPI's default pool (40 threads), 8 concurrent
    # requests interleave under the GIL and each takes ~8x as long, with a long tail. A small
    # FIFO limiter lets them wait their turn instead (serving.scoring_threads).
    limiter = anyio.CapacityLimiter(threads)

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: request_model, svc: Service) -> Any:  # type: ignore[valid-type]
        try:
            response = await anyio.to_thread.run_sync(svc.score, body, limiter=limiter)
        except NoModelError as error:
            metrics.errors.labels("no_model").inc()
            metrics.requests.labels("/score", "503").inc()
            return JSONResponse(status_code=503, content={"detail": str(error)})
        except OnlineStoreUnavailable as error:  # not the caller's fault, and it passes
            metrics.errors.labels("unavailable").inc()
            metrics.requests.labels("/score", "503").inc()
            return JSONResponse(
                status_code=503,
                content={"detail": f"{error} (Retry-After: {retry_after} s)"},
                headers={"Retry-After": str(retry_after)},
            )
        except PointInTimeError as error:  # counted apart: a client clock or a replay to fix
            metrics.errors.labels("point_in_time").inc()
            metrics.requests.labels("/score", "422").inc()
            return JSONResponse(status_code=422, content={"detail": str(error)})
        except RankflowError as error:  # a value the spec refuses: the caller's to fix
            metrics.errors.labels("validation").inc()
            metrics.requests.labels("/score", "422").inc()
            return JSONResponse(status_code=422, content={"detail": str(error)})
        except Exception:
            metrics.errors.labels("internal").inc()
            metrics.requests.labels("/score", "500").inc()
            raise
        metrics.requests.labels("/score", "200").inc()
        return response


def _probe_routes(app: FastAPI, metrics: ServiceMetrics, scoring: ScoringConfig) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(svc: Service) -> JSONResponse:
        ready = svc.ready
        body = {
            "ready": ready,
            "model": scoring.model_name,
            "arms": {arm: m.version for arm, m in svc.holder.arms.items()},
            "canary_share": svc.holder.canary_share,
            "registry_error": svc.holder.last_error,
            "serving_last_good": svc.holder.kept,
            "gc_frozen_objects": gc.get_freeze_count(),
            "log": None
            if svc.writer is None
            else {"written": svc.writer.written, "dropped": svc.writer.dropped},
        }
        return JSONResponse(status_code=200 if ready else 503, content=body)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def bind_address(settings: Settings, host: str | None, port: int | None) -> tuple[str, int]:
    """Host and port from the flags, else from ``settings.service_url`` (loopback by default)."""
    url = urlsplit(settings.service_url)
    return host or url.hostname or "127.0.0.1", port or url.port or 8080


def serve(
    settings: Settings, scoring: ScoringConfig, *, host: str | None = None, port: int | None = None
) -> None:
    """Run the service with uvicorn until interrupted (``rankflow serve``)."""
    import uvicorn

    bind_host, bind_port = bind_address(settings, host, port)
    started = time.perf_counter()
    # Opened here, not in the app's lifespan: a state that is not built (no feature service,
    # no online store) is then a RankflowError the CLI prints as one line, where uvicorn would
    # print it under the traceback of a failed startup.
    service = ScoringService(settings, scoring)
    try:
        service.start()
        app = create_app(settings, scoring, service=service, freeze_gc=True)
        log.info(
            "scoring service on http://%s:%d (%.1fs)",
            bind_host,
            bind_port,
            time.perf_counter() - started,
        )
        uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning", access_log=False)
    finally:
        service.close()
