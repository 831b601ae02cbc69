"""``rankflow gap-check``: load the served log, run the five checks, write the report, log it.

:func:`run_gap_check` reads the served-feature log and its scores (rankflow/serving/
served_log.py), recomputes the same rows offline with ``get_historical_features`` at each row's
``__log_timestamp``, samples the champion's training window as the drift reference, joins the
replayed labels, and runs rankflow/monitoring/checks.py. The report (markdown with PNG plots)
and a JSON summary go to ``<state>/reports/gap-check-<time>/`` and to an MLflow run in the
champion's experiment tagged with the model version (``rankflow.model_version``); the verdict
is printed and returned, so a flow can act on it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.errors import RankflowError
from rankflow.monitoring import checks
from rankflow.monitoring.stats import worst

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.settings import Settings

log = logging.getLogger(__name__)

ENTITY_COLUMNS = ("user_id", "item_id", "category", "position", "device", "hour_of_day")
TAG_VERDICT = "rankflow.gap_check.verdict"
TAG_MODEL_VERSION = "rankflow.model_version"


class GapCheckError(RankflowError):
    """Nothing to check (no served log) or no model to check against."""


@dataclass
class GapCheckOutcome:
    verdict: str
    checks: list[checks.CheckResult]
    report_dir: Path
    run_id: str | None = None
    model_version: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"gap check: {self.verdict.upper()} (model version {self.model_version})"]
        lines += [f"  {c.line()}" for c in self.checks]
        lines.append(f"  report      {self.report_dir / 'report.md'}")
        if self.run_id:
            lines.append(f"  MLflow run  {self.run_id}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "model_version": self.model_version,
            "context": self.context,
            "checks": {
                c.name: {"verdict": c.verdict, "summary": c.summary, "details": c.details}
                for c in self.checks
            },
        }


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


def _offline(store: Any, service: str, frame: pd.DataFrame) -> pd.DataFrame:
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


def _reference(store: Any, paths: Any, service: str, window: str | None, rows: int, seed: int):
    """A seeded sample of the champion's training window, features point-in-time."""
    from rankflow.features.training_set import load_entity_df

    impressions = load_entity_df(paths)
    day = pd.to_datetime(impressions["event_timestamp"], utc=True).dt.date
    if window and ".." in window:
        start, end = (date.fromisoformat(p) for p in window.split(".."))
        impressions = impressions[(day >= start) & (day <= end)]
    sample = impressions.sample(min(rows, len(impressions)), random_state=seed)
    entity = sample.drop(columns=[c for c in ("label", "event_id", "event_date") if c in sample])
    return store.get_historical_features(
        entity_df=entity.reset_index(drop=True),
        features=store.get_feature_service(service),
        full_feature_names=False,
    ).to_df()


def _registry(uri: str, model_name: str, versions: list[str], cache_dir: Path):
    """Scorers and offline test metrics of ``versions``; the champion's version and run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rankflow.registry.aliases import alias_version
    from rankflow.registry.promotion import CHAMPION
    from rankflow.serving.holder import load_version

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = alias_version(client, model_name, CHAMPION)
    scorers, metrics = {}, {}
    for version in versions:
        try:
            loaded = load_version(client, model_name, version, "checked", cache_dir)
        except MlflowException:
            continue  # not a version of the serving model: score_skew fails naming it
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
    settings: Settings, config: RankflowConfig, *, log_to_mlflow: bool = True
) -> GapCheckOutcome:
    """The whole check (see the module docstring)."""
    from rankflow.features.store import open_store
    from rankflow.serving.lookup import OnlineLookup
    from rankflow.serving.served_log import read_served_log
    from rankflow.serving.service import tracking_uri

    cfg, paths, service = config.monitoring, settings.paths, config.serving.feature_service
    served_all = read_served_log(paths, service)
    if served_all.empty:
        raise GapCheckError(
            f"no served-feature log under {paths.root / 'logs' / service}: serve some traffic "
            "first (`rankflow replay`)"
        )
    served = served_all.sample(min(cfg.max_rows, len(served_all)), random_state=cfg.seed)
    served = served.sort_values(checks.LOG_TIMESTAMP)
    versions = sorted(served_all["model_version"].astype(str).unique())
    uri = tracking_uri(settings, config)
    client, champion, scorers, offline_metrics = _registry(
        uri, config.registry.serving_model, versions, paths.root / "serving" / "models"
    )
    with open_store(paths, settings=settings, offline=True) as store:
        lookup = OnlineLookup(store, service)
        views = {name: slot.view for name, slot in lookup.slots.items()}
        ttls = {slot.view: slot.ttl for slot in lookup.slots.values() if not slot.on_demand}
        materialized = {v.name: v.most_recent_end_time for v in store.list_feature_views()}
        offline = _offline(store, service, served)
        window = champion.tags.get("rankflow.data_window") if champion is not None else None
        reference = _reference(store, paths, service, window, cfg.drift_rows, cfg.seed)
    served_inputs = _model_inputs(
        served, {f: served[f"{v}__{f}"] for f, v in views.items()}, lookup.schema
    )
    offline_inputs = _model_inputs(served, {f: offline[f] for f in views}, lookup.schema)
    labelled = labelled_served(paths, service, served=served_all)
    drift_features = [f for f in views if f not in cfg.drift_exclude]
    results = [
        checks.feature_skew(served, offline, views, cfg),
        checks.score_skew(served, served_inputs, offline_inputs, scorers, cfg),
        checks.drift(reference, served_inputs, drift_features, cfg),
        checks.metric_gap(labelled, offline_metrics, cfg),
        checks.freshness(served, views, ttls, materialized, cfg),
    ]
    outcome = GapCheckOutcome(
        verdict=worst([r.verdict for r in results]),
        checks=results,
        report_dir=paths.root / "reports" / f"gap-check-{datetime.now(UTC):%Y%m%dT%H%M%S%f}",
        model_version=str(champion.version) if champion is not None else None,
        context={
            "served_rows": len(served_all),
            "checked_rows": len(served),
            "labelled_rows": len(labelled),
            "versions_served": versions,
            "log_window": [
                str(served_all[checks.LOG_TIMESTAMP].min()),
                str(served_all[checks.LOG_TIMESTAMP].max()),
            ],
            "training_window": window,
            "model": config.registry.serving_model,
        },
    )
    from rankflow.monitoring.render import write_report

    write_report(outcome, served, offline_inputs, scorers)
    if log_to_mlflow:
        outcome.run_id = _log_run(client, champion, outcome, config)
    return outcome


def labelled_served(
    paths: Any, service: str, *, modes: tuple[str, ...] = ("log",), served: Any = None
) -> pd.DataFrame:
    """Served rows (features, score, arm, version) joined with their replay labels.

    ``modes``: which labels; log replay by default, because its rows were scored at the
    position they were shown at (closed-loop rows are scored at ``serving.score_position``
    and shown at their rank). The metric gap judges these rows.
    """
    from rankflow.serving.labels import read_labels
    from rankflow.serving.served_log import read_served_log

    served = read_served_log(paths, service) if served is None else served
    labels = read_labels(paths, service)
    labels = labels[labels["mode"].isin(modes)].drop(columns=["position"])
    if served.empty or labels.empty:
        return pd.DataFrame()
    return served.merge(labels, on=["__request_id", "item_id"], how="inner")


def _log_run(client: Any, champion: Any, outcome: GapCheckOutcome, config: Any) -> str:
    """An MLflow run next to the champion's (same experiment), tagged with its version."""
    if champion is not None and champion.run_id:
        experiment_id = client.get_run(champion.run_id).info.experiment_id
    else:
        experiment = client.get_experiment_by_name(config.tracking.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(config.tracking.experiment)
        )
    tags = {
        TAG_VERDICT: outcome.verdict,
        TAG_MODEL_VERSION: outcome.model_version or "none",
        "rankflow.model_name": config.registry.serving_model,
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
        out[f"gap_score_abs_diff_max_v{version}"] = v["max_abs_diff_offline_features"]
    adv = d["drift"].get("adversarial", {})
    if adv:
        out["gap_adversarial_auc"] = adv["auc"]
        out["gap_adversarial_lift"] = adv["lift"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def write_json(outcome: GapCheckOutcome, path: Path) -> None:
    path.write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
