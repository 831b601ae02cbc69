"""The ``train`` flow: point-in-time training set -> Wide & Deep and DCN-V2 -> MLflow + registry.

It reads what ``build-features`` left in the state dir (the exports and the Feast registry), so
it runs after it: on its own schedule, or inside the ``pipeline`` flow. Training, evaluation,
MLflow logging, registration and the first champion are
:func:`rankflow.training.step.train_and_register`; this flow only sequences and records.
"""

from __future__ import annotations

from prefect import flow

from flows import tasks
from flows.params import DEFAULT_CONFIG, ConfigParams, load_on_state, resolve_settings
from flows.records import RunRecord, RunSummary

FLOW_NAME = "train"


@flow(name=FLOW_NAME, validate_parameters=True, log_prints=False)
def train(config: ConfigParams = DEFAULT_CONFIG) -> RunSummary:
    """Training set through the feature service -> train, log, register (first champion).

    Args:
        config: the rankflow config (YAML path and dotted-key overrides), validated first.
    """
    settings = resolve_settings()
    config, resolved = load_on_state(config, settings)  # the values the data was built with
    if resolved.scale_out.task_runner == "dask":  # fail before any work if it cannot run
        from flows.scale_out import check_ready

        check_ready(resolved, settings)
    record = RunRecord(FLOW_NAME, config, resolved, settings.paths)
    training = record.run(
        "training_set",
        lambda: tasks.training_set(resolved, settings),
        detail=lambda built: built.describe(),
    )
    if resolved.scale_out.task_runner == "dask":
        from flows.scale_out import train_families_in_parallel

        record.run(
            "train_families",
            lambda: train_families_in_parallel(resolved, settings, training),
            detail=lambda families: families,
        )
    outcome = record.run(
        "train",
        lambda: tasks.train_and_register(resolved, settings, training),
        detail=lambda done: done.to_dict(),
    )
    record.summary.details["train_report"] = outcome.render()
    return record.write()
