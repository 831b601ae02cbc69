"""The ``build-features`` flow: raw data -> contract check -> dbt build -> Feast online store.

1. ``source: simulate`` writes the simulator's data into the raw folder (cached on the
   simulation config while the files are unchanged); ``source: raw`` takes what is there;
2. the contract check (docs/data-contract.md) stops the run on structural problems;
3. ``dbt build`` updates the DuckDB warehouse and the parquet exports, swapped in only if every
   model and dbt test passed;
4. ``feast apply`` and ``materialize-incremental`` up to the exports' as-of time.

On a state dir that was built before, the config is first held to what it was built with
(rankflow/built_with.py): values the run does not ask for are the state's, a value it asks to
change refuses the run before any task unless ``rebuild``; a completed build records its own.
"""

from __future__ import annotations

from prefect import flow

from flows import tasks
from flows.params import (
    DEFAULT_CONFIG,
    ConfigParams,
    load_on_state,
    record_build,
    resolve_settings,
)
from flows.policies import outputs_intact, record_outputs, simulate_key
from flows.records import RunRecord, RunSummary

FLOW_NAME = "build-features"


@flow(name=FLOW_NAME, validate_parameters=True, log_prints=False)
def build_features(
    config: ConfigParams = DEFAULT_CONFIG, full_refresh: bool = False, rebuild: bool = False
) -> RunSummary:
    """Simulate or ingest -> contract check -> dbt build -> feast apply + materialize-incremental.

    Args:
        config: the rankflow config (YAML path and dotted-key overrides), validated first.
        full_refresh: rebuild the warehouse's incremental models from all raw data.
        rebuild: build with this config's simulation / warehouse values even where they differ
            from those the state was built with (otherwise such a run refuses).
    """
    settings = resolve_settings()
    config, resolved = load_on_state(config, settings, rebuild=rebuild)
    paths = settings.paths
    record = RunRecord(FLOW_NAME, config, resolved, paths)
    if resolved.source == "simulate":
        raw_dir = resolved.resolved_raw_dir(paths)
        key = simulate_key(resolved, paths)
        # Serve the simulation from the cache only while its files are the ones it wrote.
        fresh = outputs_intact(paths, "simulate", key, raw_dir, paths.truth)
        simulate = tasks.simulate.with_options(refresh_cache=not fresh)
        record.run("simulate", lambda: simulate(resolved, paths))
        record_outputs(paths, "simulate", key, raw_dir, paths.truth)
    record.run("validate", lambda: tasks.contract_check(resolved, paths))
    record.run("warehouse", lambda: tasks.dbt_build(resolved, paths, full_refresh))
    record.run(
        "feature_store",
        lambda: {
            "apply": tasks.feast_apply(settings),
            "materialize": tasks.feast_materialize(settings),
        },
    )
    record_build(config, resolved, paths, FLOW_NAME)
    return record.write()
