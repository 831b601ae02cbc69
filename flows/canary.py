"""The ``canary`` flow: how a new model reaches ``@champion`` (weekly, after a failing gap check,
or ``rankflow canary``).

Refreshes the features (the ``build-features`` subflow), then one call into
:func:`rankflow.canary.run.run_canary`: a challenger warm-started from ``@champion`` on the fresh
window, the offline gate, ``@challenger``, the canary phase on closed-loop traffic, and the
decision under the promotion lock. A decision (promoted, rejected, aborted, inconclusive) is a
result, not a failed flow run; it is in the summary and on the registry versions.
"""

from __future__ import annotations

from prefect import flow

from flows import tasks
from flows.build_features import build_features
from flows.params import DEFAULT_CONFIG, ConfigParams, load_on_state, resolve_settings
from flows.records import RunRecord, RunSummary

FLOW_NAME = "canary"


@flow(name=FLOW_NAME, validate_parameters=True, log_prints=False)
def canary(
    config: ConfigParams = DEFAULT_CONFIG,
    refresh_features: bool = True,
    look_only: bool = False,
    rebuild: bool = False,
) -> RunSummary:
    """Fresh features, then a canary retrain and its decision (or, with a live phase open, a
    look at its labelled traffic).

    Args:
        config: the rankflow config (YAML path and dotted-key overrides), validated first.
        refresh_features: run the build-features subflow first (off: use the current exports).
        look_only: only look at an open live phase; never start a new canary.
        rebuild: refresh the features with this config's simulation / warehouse values even
            where they differ from those the state was built with (otherwise it refuses).
    """
    settings = resolve_settings()
    config, resolved = load_on_state(config, settings, rebuild=rebuild)
    record = RunRecord(FLOW_NAME, config, resolved, settings.paths)
    if refresh_features:
        sub = build_features(config=config, rebuild=rebuild)
        record.summary.stage_seconds.update(sub.stage_seconds)
        record.summary.details["build_features_summary"] = str(sub.summary_path)
    outcome = record.run(
        "canary",
        lambda: tasks.canary(resolved, settings, look_only),
        detail=lambda done: done.to_dict(),
    )
    record.summary.details["canary_report"] = outcome.summary()
    return record.write()
