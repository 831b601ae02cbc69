"""The ``gap-check`` flow: the offline/online gap checks over the served log, daily.

Thin: :func:`rankflow.monitoring.report.run_gap_check` loads the served-feature log, runs the
five checks, writes the report and logs it to an MLflow run next to the champion's. The flow
records the outcome with the run and returns it, verdict first, so a calling flow (the canary's
retrain trigger) can act on ``result["verdict"]`` (``pass`` / ``warn`` / ``fail``). A failing
verdict is a result, not a failed flow run: the checks ran.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.params import DEFAULT_CONFIG, ConfigParams, load_on_state, resolve_settings
from flows.records import RunRecord

FLOW_NAME = "gap-check"


@flow(name=FLOW_NAME, validate_parameters=True, log_prints=False)
def gap_check(
    config: ConfigParams = DEFAULT_CONFIG, log_to_mlflow: bool = True, start_canary: bool = True
) -> dict[str, Any]:
    """Feature skew, score skew, drift, metric gap and freshness of what was served.

    Args:
        config: the rankflow config (YAML path and dotted-key overrides), validated first.
        log_to_mlflow: log the report to an MLflow run tagged with the model version.
        start_canary: on a 'fail' verdict (and ``canary.on_gap_fail``), run the canary flow
            unless only data checks failed (those block a promotion: fix the data first).
    """
    from rankflow.canary.triggers import retrain_on_gap_verdict
    from rankflow.monitoring.report import run_gap_check

    settings = resolve_settings()
    config, resolved = load_on_state(config, settings)  # a canary it starts refreshes on it
    record = RunRecord(FLOW_NAME, config, resolved, settings.paths)
    outcome = record.run(
        "gap_check",
        lambda: run_gap_check(
            settings, resolved.monitoring, resolved.scoring(), log_to_mlflow=log_to_mlflow
        ),
        detail=lambda done: done.to_dict(),
    )
    summary = record.write()
    canary_summary = None
    verdicts = {c.name: c.verdict for c in outcome.checks}
    why = retrain_on_gap_verdict(verdicts, resolved.canary) if start_canary else None
    if why is not None:
        from flows.canary import canary

        get_run_logger().info("starting a canary: %s", why)
        canary_summary = str(canary(config=config).summary_path)
    return {
        "verdict": outcome.verdict,
        "model_version": outcome.model_version,
        "checks": {c.name: c.verdict for c in outcome.checks},
        "notes": outcome.notes,  # rows and files of the served log the checks left out
        "report": str(outcome.report_dir / "report.md"),
        "mlflow_run_id": outcome.run_id,
        "summary_path": str(summary.summary_path),
        "canary_summary": canary_summary,
    }
