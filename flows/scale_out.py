"""Scale-out of the train step: each model family trained in its own Dask worker process.

``scale_out.task_runner: dask`` in the config makes the ``train`` flow call
:func:`train_families_in_parallel` before its usual ``train-and-register`` task: one
``train-family`` task per family is submitted to a :class:`prefect_dask.DaskTaskRunner` on a
local cluster of processes (one thread each). Each task trains, logs and registers its family
and moves no alias; the ``train-and-register`` task that follows then finds both versions by
their fingerprints (nothing is trained twice) and makes the promotion decision with both.

Task runs in Dask worker processes report to the Prefect API themselves, so this needs a real
Prefect server (``PREFECT_API_URL``): against Prefect's temporary per-run server each worker
would try to start its own. A tracking server is needed too: the embedded SQLite store takes
one writer. The same task runner with ``address=`` of a remote Dask scheduler (or a
``cluster_class`` such as dask-kubernetes') spreads the families over machines instead.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.tasks import _TRANSIENT

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.features.training_set import TrainingSet
    from rankflow.settings import Settings


@task(name="train-family", cache_policy=NO_CACHE, persist_result=False, **_TRANSIENT)
def train_family(
    config: RankflowConfig, settings: Settings, training: TrainingSet, kind: str
) -> dict[str, Any]:
    """Train, log and register one family; no alias moves (the caller decides afterwards)."""
    from rankflow.training.step import CandidatesOnly, train_and_register

    started = time.perf_counter()
    outcome = train_and_register(
        config.train_step(),
        settings,
        training_set=training,
        families=(kind,),
        candidates_only=CandidatesOnly(),
    )
    candidate = outcome.candidates[kind]
    get_run_logger().info("%s: %s v%s", kind, candidate.registered_model, candidate.version)
    return {
        "kind": kind,
        "version": candidate.version,
        "reused": candidate.reused,
        "seconds": round(time.perf_counter() - started, 2),
        "pid": os.getpid(),  # the Dask worker process it ran in
    }


def check_ready(config: RankflowConfig, settings: Settings) -> None:
    """Refuse the Dask option up front, in one line, where it cannot work (see module doc)."""
    from rankflow.errors import ConfigError
    from rankflow.tracking.setup import is_local_store, resolve_tracking_uri

    if not settings.prefect_api_url:
        raise ConfigError(
            "scale_out.task_runner: dask needs a Prefect server (set PREFECT_API_URL); the "
            "Dask worker processes cannot use Prefect's temporary per-run server"
        )
    tracking = resolve_tracking_uri(config.tracking, settings)
    if is_local_store(tracking):
        raise ConfigError(
            "scale_out.task_runner: dask needs an MLflow tracking server (MLFLOW_TRACKING_URI "
            f"or tracking.uri), not the local store {tracking}: it takes one writer"
        )


def train_families_in_parallel(
    config: RankflowConfig, settings: Settings, training: TrainingSet
) -> dict[str, dict[str, Any]]:
    """One ``train-family`` task per family on a local Dask cluster; waits for all of them."""
    from prefect_dask import DaskTaskRunner

    from rankflow.training.step import MODEL_KINDS

    cluster = {
        "n_workers": min(config.scale_out.dask_workers, len(MODEL_KINDS)),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,  # no web dashboard port
    }
    with DaskTaskRunner(cluster_kwargs=cluster) as runner:
        futures = {
            kind: runner.submit(
                train_family,
                {"config": config, "settings": settings, "training": training, "kind": kind},
            )
            for kind in MODEL_KINDS
        }
        return {kind: future.result() for kind, future in futures.items()}
