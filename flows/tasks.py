"""The Prefect tasks of the flows: one per pipeline stage, each a call into the library.

Retry and cache choices (see :mod:`flows.policies`):

| task | retries (transient failures only) | cache |
|---|---|---|
| ``simulate`` | yes | config + output folders; refreshed if the files changed since |
| ``contract-check`` | yes | fingerprint of the raw files |
| ``dbt-build`` | **no**: a failed model or dbt test fails the same way again | no |
| ``feast-apply`` | yes (registry / online-store files) | no |
| ``feast-materialize`` | yes (online store locks, Redis) | no: incremental by itself |
| ``training-set`` | yes | no (data frames) |
| ``train-and-register`` | yes (MLflow tracking / registry) | no: the registry is the record |

Tasks take the validated :class:`~rankflow.config.RankflowConfig` and the state dir: its
:class:`~rankflow.paths.StatePaths` when files are all they touch, else the flow's
:class:`~rankflow.settings.Settings` (Feast's online store, MLflow). None takes or keys on a
data frame except ``train-and-register``, which receives the training set in memory and is
never cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.policies import (
    CACHE_EXPIRATION,
    TRANSIENT_RETRIES,
    TRANSIENT_RETRY_DELAYS,
    contract_cache_key,
    retry_if_transient,
    simulate_cache_key,
)

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.data.contract import RawInventory
    from rankflow.features.store import ApplySummary, MaterializeSummary
    from rankflow.features.training_set import TrainingSet
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings
    from rankflow.sim.simulate import SimulationSummary
    from rankflow.warehouse.build import WarehouseResult

_TRANSIENT: dict[str, Any] = {
    "retries": TRANSIENT_RETRIES,
    "retry_delay_seconds": TRANSIENT_RETRY_DELAYS,
    "retry_condition_fn": retry_if_transient,
}


@task(
    name="simulate",
    cache_key_fn=simulate_cache_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
    **_TRANSIENT,
)
def simulate(config: RankflowConfig, paths: StatePaths) -> SimulationSummary:
    """Write the simulator's raw data (and ground truth) for ``config.simulation``."""
    from rankflow.sim.simulate import simulate as simulate_raw

    summary = simulate_raw(config.simulation, config.resolved_raw_dir(paths), paths.truth)
    get_run_logger().info("%s", summary)
    return summary


@task(
    name="contract-check",
    cache_key_fn=contract_cache_key,
    cache_expiration=CACHE_EXPIRATION,
    persist_result=True,
    **_TRANSIENT,
)
def contract_check(config: RankflowConfig, paths: StatePaths) -> RawInventory:
    """Check the raw folder against docs/data-contract.md; ``ContractError`` lists every problem.

    Footers, schemas and the columns a rule needs only (``deep=()``): the dbt-build task decodes
    every page of the files that are new or rewritten since the last build, so decoding the
    unchanged history here every day would cost what the incremental build saves. For the same
    reason the value rules skip the files the live warehouse's manifest knows, unwritten since
    the build that checked them (``trusted_raw_files``). ``rankflow validate`` still reads
    every file in full.
    """
    from rankflow.data.contract import validate_raw
    from rankflow.warehouse.build import trusted_raw_files

    raw_dir = config.resolved_raw_dir(paths)
    trusted = trusted_raw_files(paths, vars=config.warehouse.model_dump(), raw_dir=raw_dir)
    inventory = validate_raw(raw_dir, deep=(), trusted=trusted)
    get_run_logger().info("%s", inventory)
    return inventory


@task(name="dbt-build", cache_policy=NO_CACHE, persist_result=False, retries=0)
def dbt_build(config: RankflowConfig, paths: StatePaths, full_refresh: bool) -> WarehouseResult:
    """dbt build of the warehouse and the parquet exports (swapped in only on success)."""
    from rankflow.warehouse.build import build_warehouse

    result = build_warehouse(
        paths,
        full_refresh=full_refresh,
        vars=config.warehouse.model_dump(),
        raw_dir=config.resolved_raw_dir(paths),
    )
    get_run_logger().info("%s", result)
    return result


@task(name="feast-apply", cache_policy=NO_CACHE, persist_result=False, **_TRANSIENT)
def feast_apply(settings: Settings) -> ApplySummary:
    """``feast apply``: register the feature repo's definitions for this state dir."""
    from rankflow.features import store as feature_store
    from rankflow.features.summaries import applied_line

    applied = feature_store.apply_feature_repo(settings)
    get_run_logger().info("%s", applied_line(applied))
    return applied


@task(name="feast-materialize", cache_policy=NO_CACHE, persist_result=False, **_TRANSIENT)
def feast_materialize(settings: Settings) -> MaterializeSummary:
    """``materialize-incremental`` up to the exports' as-of time (not the wall clock)."""
    from rankflow.features import store as feature_store
    from rankflow.features.summaries import materialized_line

    end = feature_store.exports_as_of(settings.paths)
    materialized = feature_store.materialize_incremental(settings, end)
    get_run_logger().info("%s", materialized_line(materialized))
    return materialized


@task(name="training-set", cache_policy=NO_CACHE, persist_result=False, **_TRANSIENT)
def training_set(config: RankflowConfig, settings: Settings) -> TrainingSet:
    """The point-in-time training set through the feature service, split by time."""
    from rankflow.features.training_set import build_training_set

    built = build_training_set(
        settings, config.training_set, feature_service=config.feature_service
    )
    get_run_logger().info("training set: %s", built.describe())
    return built


@task(name="train-and-register", cache_policy=NO_CACHE, persist_result=False, **_TRANSIENT)
def train_and_register(
    config: RankflowConfig, settings: Settings, training: TrainingSet | None = None
) -> Any:
    """Train Wide & Deep and DCN-V2, log both to MLflow, register them, set the first champion.

    A transient failure (the tracking server or its database) retries the whole call, which
    is safe: it moves no alias before both candidates are logged, registered and gated, and a
    model whose inputs already have a registry version is reused, not trained again.
    """
    from rankflow.training.step import train_and_register as train_and_register_models

    # A second run queues behind the first inside (the training lock of each family), never
    # racing it for the shared checkpoints and registry; then it reuses its registered models.
    outcome = train_and_register_models(config.train_step(), settings, training_set=training)
    # One line: the flow's run summary carries the full report (printed once, at the end).
    shown = ", ".join(f"@{a} = v{v}" for a, v in sorted(outcome.aliases.items())) or "none"
    get_run_logger().info("registered; aliases of %s: %s", outcome.serving_model, shown)
    return outcome


@task(name="canary", cache_policy=NO_CACHE, persist_result=False)
def canary(config: RankflowConfig, settings: Settings, look_only: bool = False) -> Any:
    """Warm-started challenger -> offline gate -> @challenger -> canary phase -> decision.

    Not retried: it moves aliases, and a retry after a partial move would decide against a
    registry it changed itself. Every alias move re-reads the registry under the promotion
    lock, so a crash leaves the aliases consistent; start a new canary.
    """
    from rankflow.canary.run import run_canary
    from rankflow.sim.canary import canary_simulation

    outcome = run_canary(
        settings, config.canary_run(), look_only=look_only, simulation=canary_simulation()
    )
    # One line: the flow's run summary carries the full report (printed once, at the end).
    get_run_logger().info("canary: %s: %s", outcome.decision.upper(), outcome.reason)
    return outcome
