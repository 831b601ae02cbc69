"""``rankflow gap-check``: load the served log, run the five checks, write the report, log it.

:func:`run_gap_check` reads the served-feature log and its scores (rankflow/serving/
served_log.py), recomputes the same rows offline with ``get_historical_features`` at each row's
``__log_timestamp``, samples the days before the served day as the drift reference
(rankflow/monitoring/drift.py), joins the replayed labels, and runs the checks
(rankflow/monitoring/checks.py, drift.py). The report (markdown with PNG plots) and a JSON
summary go to ``<state>/reports/gap-check-<time>/`` and to an MLflow run in the champion's
experiment tagged with the model version (``rankflow.model_version``); the verdict is printed
and returned, so a flow can act on it. Rows and files of the log that the reader left out
(repeated request ids, times pandas cannot hold, unreadable files) are counted and named in the
outcome's notes, beside the verdict.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.errors import RankflowError
from rankflow.monitoring import checks
from rankflow.monitoring.drift import (
    describe_reference,
    drift,
    reference_entities,
    reference_window,
    served_hours,
    served_span,
)
from rankflow.monitoring.outcome import GapCheckOutcome
from rankflow.monitoring.render import write_report
from rankflow.monitoring.stats import worst

if TYPE_CHECKING:
    from feast import FeatureStore
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from rankflow.config import ScoringConfig
    from rankflow.monitoring.config import MonitoringConfig
    from rankflow.paths import StatePaths
    from rankflow.serving.log_files import UnreadableFile
    from rankflow.serving.served_log import ServedLog
    from rankflow.settings import Settings

log = logging.getLogger(__name__)

ENTITY_COLUMNS = ("user_id", "item_id", "category", "position", "device", "hour_of_day")
TAG_VERDICT = "rankflow.gap_check.verdict"
TAG_MODEL_VERSION = "rankflow.model_version"


class GapCheckError(RankflowError):
    """Nothing to check (no served log) or no model to check against."""


# ----------------------------------------------------------------------------- loading
def _model_inputs(
    frame: pd.DataFrame, values: dict[str, Any], schema: dict[str, str]
) -> pd.DataFrame:
    """Rows as the models read them: entity columns, day of week, features typed by the
    service schema (numbers float64 with NaN, strings object with None)."""
    from rankflow.features.store import coerce_features

    out = pd.DataFrame({name: frame[name].to_numpy() for name in ENTITY_COLUMNS})
    out["category"] = out["category"].where(out["category"] != "", None)
    out["day_of_week"] = pd.to_datetime(frame[checks.LOG_TIMESTAMP]).dt.isocalendar().day.to_numpy()
    for name, column in values.items():
        out[name] = np.asarray(column, dtype=object)
    out = coerce_features(out, {k: v for k, v in schema.items() if k in values})
    out.index = frame.index
    return out


def _offline(store: FeatureStore, service: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``get_historical_features`` of ``frame``'s entity rows at their log time, row-aligned."""
    entity = pd.DataFrame({name: frame[name].to_numpy() for name in ENTITY_COLUMNS})
    entity["event_timestamp"] = pd.to_datetime(frame[checks.LOG_TIMESTAMP], utc=True).to_numpy()
    entity[checks.ROW] = np.arange(len(frame))
    result = store.get_historical_features(
        entity_df=entity, features=store.get_feature_service(service), full_feature_names=False
    ).to_df()
    result = result.sort_values(checks.ROW).reset_index(drop=True)
    result.index = frame.index
    return result


def _offline_as_served(
    store: FeatureStore, service: str, frame: pd.DataFrame, views: dict[str, str]
) -> tuple[pd.DataFrame, int]:
    """:func:`_offline`, except where the online store did not hold the row's entity at all
    (every feature of a view ``NOT_FOUND``): those views' values are looked up as the service
    could have had them, at the start of the row's day (:func:`as_served`), and the rows are
    counted.

    An entity created after the last materialization (a user who signed up that day) is unknown
    to the service until the next one, while the offline join at the request's time already
    knows it: that is the schedule's latency, not skew. Compared as served, it matches; an
    entity the online store should have held and lost still differs.
    """
    from rankflow.monitoring.drift import as_served

    offline = _offline(store, service, frame)
    unknown = {
        view: _not_found(frame, [f"{view}__{f}__status" for f, v in views.items() if v == view])
        for view in sorted(set(views.values()))
    }
    rows = np.logical_or.reduce([mask for mask in unknown.values()] or [np.zeros(len(frame), bool)])
    if not rows.any():
        return offline, 0
    subset = as_served(frame.loc[rows], checks.LOG_TIMESTAMP)
    published = _offline(store, service, subset)
    for view, mask in unknown.items():
        features = [f for f, v in views.items() if v == view and f in published.columns]
        index = frame.index[mask]
        offline.loc[index, features] = published.loc[index, features].to_numpy()
    return offline, int(rows.sum())


def _not_found(frame: pd.DataFrame, status_columns: list[str]) -> np.ndarray:
    """Rows whose every listed ``__status`` is Feast's ``NOT_FOUND``."""
    from rankflow.serving.lookup import NOT_FOUND

    present = [c for c in status_columns if c in frame.columns]
    if not present:
        return np.zeros(len(frame), dtype=bool)
    return (frame[present] == NOT_FOUND).all(axis=1).to_numpy()


def _reference(
    store: FeatureStore,
    paths: StatePaths,
    service: str,
    served_all: pd.DataFrame,
    window: str | None,
    monitoring: MonitoringConfig,
) -> tuple[pd.DataFrame, str]:
    """The drift reference (rankflow/monitoring/drift.py): a seeded sample of the
    ``drift_reference_days`` days before the served day (or at the end of the champion's
    training window ``window``), the hours of the day the served log covers, features as
    served; and the line that names it."""
    from rankflow.features.training_set import load_entity_df

    impressions = load_entity_df(paths)
    data_end = impressions["event_timestamp"].max().date()
    logged = served_all[checks.LOG_TIMESTAMP]
    span = served_span(logged)
    mode = monitoring.drift_reference
    days = reference_window(
        mode,
        monitoring.drift_reference_days,
        data_end,
        served_from=span[0].date() if span is not None else None,
        training_window=window,
    )
    hours = served_hours(logged)
    entity = reference_entities(impressions, days, monitoring.drift_rows, monitoring.seed, hours)
    frame = store.get_historical_features(
        entity_df=entity, features=store.get_feature_service(service), full_feature_names=False
    ).to_df()
    return frame, describe_reference(mode, days, hours)


def _registry(uri: str, scoring: ScoringConfig, versions: list[str], cache_dir: Path):
    """Scorers and offline test metrics of ``versions``; the champion's version and run.
    A version that is not the serving model's, or was trained on another feature service, gets
    no scorer: score_skew fails naming it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rankflow.registry.aliases import alias_version
    from rankflow.registry.promotion import CHAMPION
    from rankflow.serving.holder import ModelRefused, load_version

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_name = scoring.model_name
    champion = alias_version(client, model_name, CHAMPION)
    scorers, metrics = {}, {}
    for version in versions:
        try:
            loaded = load_version(
                client,
                model_name,
                version,
                "checked",
                cache_dir,
                feature_service=scoring.feature_service,
            )
        except (MlflowException, ModelRefused):
            continue
        scorers[version] = loaded.scorer
        if loaded.run_id:
            run = client.get_run(loaded.run_id)
            metrics[version] = {
                k.removeprefix("test_"): v
                for k, v in run.data.metrics.items()
                if k.startswith("test_")
            }
    return client, champion, scorers, metrics


# ------------------------------------------------------------------------------- run
def run_gap_check(
    settings: Settings,
    monitoring: MonitoringConfig,
    scoring: ScoringConfig,
    *,
    log_to_mlflow: bool = True,
) -> GapCheckOutcome:
    """The whole check (see the module docstring) of what a service with ``scoring`` served,
    against the thresholds of ``monitoring``."""
    from rankflow.features.store import coerce_features, open_store
    from rankflow.serving.labels import load_labels, match_labels
    from rankflow.serving.lookup import OnlineLookup
    from rankflow.tracking.setup import resolve_tracking_uri

    paths, service = settings.paths, scoring.feature_service
    served_log, served = served_rows(paths, service, monitoring)
    served_all = served_log.frame
    labels, unreadable_labels = load_labels(paths, service)
    versions = sorted(served_all["model_version"].astype(str).unique())
    uri = resolve_tracking_uri(scoring.tracking, settings)
    client, champion, scorers, offline_metrics = _registry(
        uri, scoring, versions, paths.serving_models
    )
    with open_store(settings, offline=True) as store:
        lookup = OnlineLookup(store, service)
        views = {name: slot.view for name, slot in lookup.slots.items()}
        ttls = {slot.view: slot.ttl for slot in lookup.slots.values() if not slot.on_demand}
        materialized = {v.name: v.most_recent_end_time for v in store.list_feature_views()}
        stored_views = {f: v for f, v in views.items() if v in ttls}  # not on-demand
        offline, unpublished = _offline_as_served(store, service, served, stored_views)
        window = champion.tags.get("rankflow.data_window") if champion is not None else None
        reference, reference_days = _reference(
            store, paths, service, served_all, window, monitoring
        )
    served_inputs = _model_inputs(
        served, {f: served[f"{v}__{f}"] for f, v in views.items()}, lookup.schema
    )
    offline_inputs = _model_inputs(served, {f: offline[f] for f in views}, lookup.schema)
    reference_inputs = coerce_features(reference, lookup.schema)
    matched = match_labels(served_all, labels)
    labelled = matched.frame
    drift_features = [f for f in views if f not in monitoring.drift_exclude]
    results = [
        checks.feature_skew(served, offline, views, monitoring, unpublished_rows=unpublished),
        checks.score_skew(served, served_inputs, offline_inputs, scorers, monitoring),
        drift(reference_inputs, served_inputs, drift_features, monitoring, reference_days),
        checks.metric_gap(labelled, offline_metrics, monitoring),
        checks.freshness(served, views, ttls, materialized, monitoring),
    ]
    outcome = GapCheckOutcome(
        verdict=worst([r.verdict for r in results]),
        checks=results,
        report_dir=paths.reports / f"gap-check-{datetime.now(UTC):%Y%m%dT%H%M%S%f}",
        model_version=str(champion.version) if champion is not None else None,
        context={
            **_context(served_all, served, labelled, versions, window, scoring.model_name),
            "served_log": served_log.to_dict(),
            "labels": matched.to_dict(),
        },
        notes=served_log.notes() + _label_notes(unreadable_labels) + matched.notes(),
    )
    write_report(outcome, served, offline_inputs, scorers)
    if log_to_mlflow:
        outcome.run_id = _log_run(client, champion, outcome, scoring)
    return outcome


def served_rows(
    paths: StatePaths, service: str, monitoring: MonitoringConfig
) -> tuple[ServedLog, pd.DataFrame]:
    """The whole served log and the seeded sample of it the checks compare, in log order."""
    from rankflow.serving.served_log import load_served_log

    served_log = load_served_log(paths, service)
    served_all = served_log.frame
    if served_all.empty:
        why = [
            f"no served rows to check under {paths.logs / service}: serve some traffic first "
            "(`rankflow replay`)",
            *served_log.notes(),  # rows or files the reader had to leave out, if any
        ]
        raise GapCheckError("; ".join(why))
    served = served_all.sample(
        min(monitoring.max_rows, len(served_all)), random_state=monitoring.seed
    )
    return served_log, served.sort_values(checks.LOG_TIMESTAMP)


def _context(
    served_all: pd.DataFrame,
    served: pd.DataFrame,
    labelled: pd.DataFrame,
    versions: list[str],
    window: str | None,
    model_name: str,
) -> dict[str, Any]:
    """What the report says the checks looked at: row counts, versions and windows."""
    return {
        "served_rows": len(served_all),
        "checked_rows": len(served),
        "labelled_rows": len(labelled),
        "versions_served": versions,
        "log_window": [
            str(served_all[checks.LOG_TIMESTAMP].min()),
            str(served_all[checks.LOG_TIMESTAMP].max()),
        ],
        "training_window": window,
        "model": model_name,
    }


def labelled_served(
    paths: StatePaths,
    service: str,
    *,
    modes: tuple[str, ...] = ("log",),
    served: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Served rows (features, score, arm, version) joined with their replay labels
    (:func:`join_labels`), read from the state's log when ``served`` is not given."""
    from rankflow.serving.labels import read_labels
    from rankflow.serving.served_log import read_served_log

    served = read_served_log(paths, service) if served is None else served
    return join_labels(served, read_labels(paths, service), modes)


def join_labels(
    served: pd.DataFrame, labels: pd.DataFrame, modes: tuple[str, ...] = ("log",)
) -> pd.DataFrame:
    """The served rows that have a label, by (``__request_id``, ``item_id``); empty when
    nothing is labelled (plain ``/score`` traffic). The metric gap judges these rows.

    ``modes``: which labels; log replay by default, because its rows were scored at the
    position they were shown at (closed-loop rows are scored at ``serving.score_position``
    and shown at their rank).
    """
    from rankflow.serving.labels import match_labels

    return match_labels(served, labels, modes).frame


def _label_notes(unreadable: list[UnreadableFile]) -> list[str]:
    if not unreadable:
        return []
    return [
        f"{len(unreadable)} unreadable labels file(s) skipped, the other files were read: "
        + "; ".join(u.line() for u in unreadable)
    ]


def _log_run(
    client: MlflowClient,
    champion: ModelVersion | None,
    outcome: GapCheckOutcome,
    scoring: ScoringConfig,
) -> str:
    """An MLflow run next to the champion's (same experiment), tagged with its version."""
    if champion is not None and champion.run_id:
        experiment_id = client.get_run(champion.run_id).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(scoring.tracking.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(scoring.tracking.experiment)
        )
    tags = {
        TAG_VERDICT: outcome.verdict,
        TAG_MODEL_VERSION: outcome.model_version or "none",
        "rankflow.model_name": scoring.model_name,
        "rankflow.run_kind": "gap-check",
        "mlflow.runName": f"gap-check v{outcome.model_version} {outcome.verdict}",
    }
    if champion is not None and champion.run_id:
        tags["rankflow.champion_run_id"] = champion.run_id
    run = client.create_run(experiment_id, tags=tags)
    for key, value in _numbers(outcome).items():
        client.log_metric(run.info.run_id, key, value)
    client.log_artifacts(run.info.run_id, str(outcome.report_dir), "gap_check")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _numbers(outcome: GapCheckOutcome) -> dict[str, float]:
    """Headline numbers as metrics (finite only; MLflow keys)."""
    out: dict[str, float] = {}
    for result in outcome.checks:
        out[f"gap_{result.name}_verdict"] = {"pass": 0.0, "warn": 1.0, "fail": 2.0}[result.verdict]
    d = {c.name: c.details for c in outcome.checks}
    features = d["feature_skew"].get("features", {})
    if features:
        out["gap_feature_mismatch_rate_max"] = max(f["mismatch_rate"] for f in features.values())
    for version, v in d["score_skew"].get("versions", {}).items():
        out[f"gap_score_mismatch_rate_v{version}"] = v["mismatch_rate"]
        out[f"gap_score_abs_diff_max_v{version}"] = v["max_abs_diff"]
    served_log = outcome.context.get("served_log", {})
    if served_log:
        out["gap_served_log_duplicate_rows"] = served_log["duplicate_rows"]
        out["gap_served_log_skipped_rows"] = sum(o["rows"] for o in served_log["out_of_range"])
        out["gap_served_log_unreadable_files"] = len(served_log["unreadable_files"])
    adv = d["drift"].get("adversarial", {})
    if adv:
        out["gap_adversarial_auc"] = adv["auc"]
        out["gap_adversarial_lift"] = adv["lift"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}
