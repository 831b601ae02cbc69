"""The ``pipeline`` flow: ``build-features`` then ``train``, as subflows, and one summary.

The summary has the stages of both (timings, row and quarantine counts, training-set shape,
the training outcome) and is written to ``$RANKFLOW_HOME/runs/<time>-pipeline-<id>/``, next to
the two subflows' own summaries.
"""

from __future__ import annotations

from prefect import flow

from flows.build_features import build_features
from flows.params import DEFAULT_CONFIG, ConfigParams, load_on_state, resolve_settings
from flows.records import RunRecord, RunSummary
from flows.train import train

FLOW_NAME = "pipeline"


@flow(name=FLOW_NAME, validate_parameters=True, log_prints=False)
def pipeline(
    config: ConfigParams = DEFAULT_CONFIG, full_refresh: bool = False, rebuild: bool = False
) -> RunSummary:
    """build-features (simulate/ingest -> contract -> dbt -> Feast), then train (-> registry).

    Args:
        config: the rankflow config (YAML path and dotted-key overrides), validated first.
        full_refresh: rebuild the warehouse's incremental models from all raw data.
        rebuild: build with this config's simulation / warehouse values even where they differ
            from those the state was built with (otherwise such a run refuses).
    """
    settings = resolve_settings()
    config, resolved = load_on_state(config, settings, rebuild=rebuild)
    record = RunRecord(FLOW_NAME, config, resolved, settings.paths)
    runs: dict[str, str] = {}
    for name, subflow in (
        (
            "build_features",
            lambda: build_features(config=config, full_refresh=full_refresh, rebuild=rebuild),
        ),
        ("train", lambda: train(config=config)),
    ):
        sub = subflow()
        runs[name] = str(sub.summary_path)
        record.summary.stage_seconds.update(sub.stage_seconds)
        record.summary.details.update(
            {k: v for k, v in sub.details.items() if k not in ("flow", "config")}
        )
    record.summary.details["subflow_summaries"] = runs
    return record.write()
