"""The features-daily deployment's work, in process, on simulated data: simulate the window
``config.simulation`` names, hold it to the data contract, build the warehouse incrementally,
refresh the online store, and record what the state was built with.

The ``build-features`` flow (flows/build_features.py) runs the same steps as Prefect tasks; the
simulation code cannot import the flows, so the drift scenario and the soak call the stages
directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.paths import StatePaths
    from rankflow.settings import Settings


def build_simulated(settings: Settings, config: RankflowConfig, *, by: str) -> None:
    """Simulate -> contract check -> dbt build (incremental) -> feast apply + materialize;
    then record the simulation and warehouse settings as the state's (``by`` names who)."""
    from rankflow.built_with import BuildRequest, build_settings, record_build
    from rankflow.data.contract import validate_raw
    from rankflow.features.store import refresh_online_store
    from rankflow.sim.simulate import simulate
    from rankflow.tracking.lineage import git_sha
    from rankflow.warehouse.build import build_warehouse, trusted_raw_files

    paths = settings.paths
    raw = config.resolved_raw_dir(paths)
    simulate(config.simulation, raw, paths.truth)
    warehouse_vars = config.warehouse.model_dump()
    validate_raw(raw, deep=(), trusted=trusted_raw_files(paths, vars=warehouse_vars, raw_dir=raw))
    build_warehouse(paths, vars=warehouse_vars, raw_dir=raw)
    refresh_online_store(settings)
    built = build_settings(config.source, config.simulation, config.warehouse)
    request = BuildRequest(built, file_settings=_file_settings(paths))
    record_build(paths, request, ("simulation", "warehouse"), by=by, git_sha=git_sha())


def _file_settings(paths: StatePaths) -> dict[str, Any] | None:
    """What the default config file says of the build keys, for a state built the first time
    (as ``rankflow run`` without ``--config`` records it): later commands on the default file
    then take the state's values. None on a state with a record: keep what it says."""
    from rankflow.built_with import build_settings, read_record
    from rankflow.config import load_config

    if read_record(paths) is not None:
        return None
    alone = load_config(None, {})
    return build_settings(alone.source, alone.simulation, alone.warehouse)
