"""The gap checks over the served log, each a pass / warn / fail with its numbers (drift has
its own module, rankflow/monitoring/drift.py).

Inputs are frames the report module loads (rankflow/monitoring/report.py): the served rows
(Feast's log schema joined with the score log), the same rows' features recomputed offline by
``get_historical_features`` at ``__log_timestamp``, the labels of replayed traffic, and the
models of the versions that served. Each check returns a :class:`CheckResult` whose summary
names the features, versions or rows that failed, how many, and what to do.

A request may carry its own ``time``. The online store holds only its newest values, so a past
time is answered with values stamped after it (:func:`served_after_request`), while the offline
join answers that very time: such rows differ by design, not by skew, and the skew checks
compare them on what was served only, counting and naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models import metrics as offline_metrics
from rankflow.monitoring.config import MonitoringConfig, Threshold
from rankflow.monitoring.stats import (
    ScoreComparison,
    Verdict,
    calibration_error,
    compare_scores,
    compare_values,
    grade,
    worst,
)

ROW = "__row"
LOG_TIMESTAMP = "__log_timestamp"
REQUEST_ID = "__request_id"
EXAMPLES = 3  # request ids named per finding


@dataclass
class CheckResult:
    name: str
    verdict: Verdict
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.verdict.upper():<4} {self.name}: {self.summary}"


def _g(value: float | None, threshold: Threshold) -> Verdict:
    return grade(value, threshold.warn, threshold.fail)


def _fmt(value: float) -> str:
    return "nan" if value is None or not np.isfinite(value) else f"{value:.4g}"


# ------------------------------------------------------------- rows with a past request time
def served_after_request(served: pd.DataFrame) -> np.ndarray:
    """Rows served a value stamped after the request's own time (``__log_timestamp``): a
    request with a past ``time`` that the online store, which holds only its newest values,
    answered with newer ones. Read from the log's ``<view>__<feature>__timestamp`` columns."""
    when = pd.to_datetime(served[LOG_TIMESTAMP], utc=True)
    later = pd.Series(False, index=served.index)
    for column in served.columns:
        if column.endswith("__timestamp") and column != LOG_TIMESTAMP:
            later |= pd.to_datetime(served[column], utc=True) > when  # NaT compares False
    return later.to_numpy()


def _request_ids(rows: pd.DataFrame, positions: np.ndarray | list[int]) -> str:
    """The distinct request ids of ``rows`` at ``positions``, the first few, in order."""
    ids = rows[REQUEST_ID].iloc[list(positions)].drop_duplicates().head(EXAMPLES)
    return ", ".join(str(i) for i in ids)


def _past_time_note(served: pd.DataFrame, past: np.ndarray) -> str:
    """One line on the rows :func:`served_after_request` found; empty when there are none."""
    if not past.any():
        return ""
    requests = served.loc[past, REQUEST_ID].nunique()
    return (
        f"{int(past.sum()):,} rows of {requests} request(s) with a past `time` (e.g. "
        f"{_request_ids(served, np.flatnonzero(past))}) were served values stamped after that "
        "time, which is "
        "all the online store holds: left out of the point-in-time comparison (not skew; to "
        "score past times, replay them against a store materialized to that day)"
    )


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


# ------------------------------------------------------------------------- feature skew
def feature_skew(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    views: Mapping[str, str],
    cfg: MonitoringConfig,
    *,
    unpublished_rows: int = 0,
) -> CheckResult:
    """Served ``<view>__<feature>`` against the point-in-time value at ``__log_timestamp``.

    ``offline`` is aligned row by row with ``served``. Mismatch rate and largest difference per
    feature over the rows not :func:`served_after_request`; the verdict names every feature
    over the warn threshold, with an example pair and request ids. ``unpublished_rows``: rows
    whose entity the online store did not hold yet, whose ``offline`` values are those
    published at the start of their day (rankflow/monitoring/report.py says why).
    """
    past = served_after_request(served)
    compared, recomputed = served.loc[~past], offline.loc[~past]
    per_feature: dict[str, dict[str, Any]] = {}
    flagged = []
    for feature, view in views.items():
        column = f"{view}__{feature}"
        if column not in compared.columns or feature not in recomputed.columns:
            continue
        cmp = compare_values(
            compared[column].to_numpy(), recomputed[feature].to_numpy(), cfg.feature_tolerance
        )
        verdict = _g(cmp.rate, cfg.feature_mismatch_rate)
        per_feature[feature] = {
            "view": view,
            "rows": cmp.rows,
            "mismatch_rate": cmp.rate,
            "max_abs_diff": cmp.max_abs_diff,
            "example": cmp.example,
            "verdict": verdict,
        }
        if verdict != "pass":
            ids = _request_ids(compared, cmp.examples)
            flagged.append(
                f"{view}:{feature} {cmp.mismatches:,} of {cmp.rows:,} rows ({cmp.rate:.2%}; "
                f"{cmp.example}; request ids {ids})"
            )
    verdict = worst([f["verdict"] for f in per_feature.values()])
    summary = (
        f"{len(per_feature)} features on {len(compared):,} rows match the point-in-time values"
        if not flagged
        else f"{len(flagged)} feature(s) differ: "
        + "; ".join(flagged[:6])
        + (
            ". The online store serves other values than the offline join at the same time: "
            "re-materialize (`rankflow features`), then check the view's TTL and the "
            "on-demand transform"
        )
    )
    details = {
        "features": per_feature,
        "past_time_rows": int(past.sum()),
        "unpublished_rows": unpublished_rows,
    }
    unpublished = (
        f"{unpublished_rows:,} rows had an entity the online store did not hold yet (created "
        "after its last materialization, e.g. a same-day signup): compared with the values "
        "published at the start of their day, as served"
        if unpublished_rows
        else ""
    )
    return CheckResult(
        "feature_skew",
        verdict,
        _joined(summary, _past_time_note(served, past), unpublished),
        details,
    )


# --------------------------------------------------------------------------- score skew
def score_skew(
    served: pd.DataFrame,
    served_inputs: pd.DataFrame,
    offline_inputs: pd.DataFrame,
    scorers: Mapping[str, Any],
    cfg: MonitoringConfig,
) -> CheckResult:
    """The logged score against offline batch scoring (``Scorer.predict_proba``, the pandas
    spec path) of the same rows by the version the log names, on (a) the features the service
    served (every row) and (b) the features recomputed offline (the rows not
    :func:`served_after_request`). (a) isolates the model and transform, (b) is the end-to-end
    offline/online difference. A version fails on the rate of rows whose scores differ by more
    than ``monitoring.score_tolerance``, not on the largest difference: a few odd requests must
    not fail a day of traffic."""
    past = pd.Series(served_after_request(served), index=served.index)
    per_version: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    flagged = []
    for version, rows in served.groupby("model_version"):
        scorer = scorers.get(str(version))
        if scorer is None:
            verdicts.append("fail")
            flagged.append(
                f"v{version}: {len(rows):,} rows logged with a version that is not a "
                "registered version of the serving model (or was trained on another feature "
                "service): check which model the service loaded (`/readyz`)"
            )
            continue
        finding = _version_skew(
            rows, past.loc[rows.index].to_numpy(), scorer, served_inputs, offline_inputs, cfg
        )
        per_version[str(version)] = finding.details
        verdicts.append(finding.verdict)
        if finding.verdict != "pass":
            flagged.append(f"v{version}: {finding.line}")
    verdict = worst(verdicts)
    summary = (
        f"logged scores equal offline batch scores of versions "
        f"{', '.join(f'v{v}' for v in per_version)} (within {cfg.score_tolerance:g})"
        if not flagged
        else "; ".join(flagged)
    )
    summary = _joined(summary, _past_time_note(served, past.to_numpy()))
    return CheckResult("score_skew", verdict, summary, {"versions": per_version})


@dataclass
class _VersionSkew:
    verdict: Verdict
    line: str
    details: dict[str, Any]


def _version_skew(
    rows: pd.DataFrame,
    past: np.ndarray,
    scorer: Any,
    served_inputs: pd.DataFrame,
    offline_inputs: pd.DataFrame,
    cfg: MonitoringConfig,
) -> _VersionSkew:
    """One version's rows: (a) and (b) of :func:`score_skew`, graded on the worse rate."""
    logged = rows["p_click"].to_numpy(np.float64)
    tolerance = cfg.score_tolerance
    same = compare_scores(logged, scorer.predict_proba(served_inputs.loc[rows.index]), tolerance)
    point_in_time = rows.index[~past]
    full = compare_scores(
        logged[~past], scorer.predict_proba(offline_inputs.loc[point_in_time]), tolerance
    )
    # Graded on the worse rate; blamed on the model when the served features differ too.
    judged, judged_rows = (
        (same, rows) if same.rate >= full.rate else (full, rows.loc[point_in_time])
    )
    on_served = same.rate >= cfg.score_mismatch_rate.warn
    verdict = _g(judged.rate, cfg.score_mismatch_rate)
    details = {
        "rows": len(rows),
        "rows_compared_point_in_time": full.rows,
        "rows_beyond_tolerance": judged.beyond,
        "mismatch_rate": judged.rate,
        "mismatch_rate_served_features": same.rate,
        "mismatch_rate_offline_features": full.rate,
        "max_abs_diff": judged.max_abs_diff,
        "max_abs_diff_served_features": same.max_abs_diff,
        "max_abs_diff_offline_features": full.max_abs_diff,
        "verdict": verdict,
    }
    return _VersionSkew(verdict, _skew_line(judged, judged_rows, on_served, tolerance), details)


def _skew_line(cmp: ScoreComparison, rows: pd.DataFrame, on_served: bool, tolerance: float) -> str:
    ids = _request_ids(rows, cmp.worst)
    where = (
        "cause model/transform: they differ on the very features served, so the model or "
        "transform differs online: check that the service loaded the version it logs "
        "(`/readyz`; an alias that moved mid-day?) and that the request transform still equals "
        "the pandas one (models/spec.py)"
        if on_served
        else "cause features: they differ only on the point-in-time features, not on the ones "
        "served: see feature_skew, and fix the online store's data (re-materialize, TTL), not "
        "the model"
    )
    return (
        f"{cmp.beyond:,} of {cmp.rows:,} rows ({cmp.rate:.2%}) differ from offline batch scores "
        f"by more than {tolerance:g} (largest {_fmt(cmp.max_abs_diff)}; request ids {ids}); "
        f"{where}"
    )


# ---------------------------------------------------------------------------- metric gap
def _not_assessed() -> CheckResult:
    """Served traffic that nothing labelled (plain ``/score`` traffic has no labels): a
    warning, as for too few labelled rows, since there is nothing to judge."""
    return CheckResult(
        "metric_gap",
        "warn",
        "no labelled served traffic: no labels join the served log by (__request_id, item_id) "
        "(`rankflow replay --mode log` writes them)",
    )


def metric_gap(
    labelled: pd.DataFrame, offline: Mapping[str, Mapping[str, float]], cfg: MonitoringConfig
) -> CheckResult:
    """Offline test AUC / logloss / calibration of each serving version against the same on
    its labelled served traffic, per arm."""
    if labelled.empty:  # without labels the join has no rows, and maybe not even columns
        return _not_assessed()
    per_arm: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    flagged = []
    for (arm, version), rows in labelled.groupby(["arm", "model_version"]):
        y, p = rows["label"].to_numpy(np.float64), rows["p_click"].to_numpy(np.float64)
        key = f"{arm} v{version}"
        if len(rows) < cfg.min_labelled_rows or y.sum() == 0 or y.sum() == len(y):
            per_arm[key] = {"rows": len(rows), "verdict": "warn", "note": "too few labelled rows"}
            verdicts.append("warn")
            flagged.append(f"{key}: {len(rows)} labelled rows (< {cfg.min_labelled_rows})")
            continue
        ref = offline.get(str(version), {})
        online = {
            "auc": offline_metrics.auc(y, p),
            "logloss": offline_metrics.logloss(y, p),
            "calibration_error": calibration_error(y, p),
        }
        auc_drop = ref.get("auc", float("nan")) - online["auc"]
        ll_rise = online["logloss"] - ref.get("logloss", float("nan"))
        parts = {
            "auc_drop": _g(auc_drop, cfg.auc_drop),
            "logloss_rise": _g(ll_rise, cfg.logloss_rise),
            "calibration_error": _g(online["calibration_error"], cfg.calibration_error),
        }
        v = worst(list(parts.values()))
        verdicts.append(v)
        per_arm[key] = {
            "rows": len(rows),
            "ctr": float(y.mean()),
            "online": online,
            "offline": dict(ref),
            "auc_drop": auc_drop,
            "logloss_rise": ll_rise,
            "verdicts": parts,
            "verdict": v,
        }
        text = (
            f"{key}: AUC {_fmt(online['auc'])} online vs {_fmt(ref.get('auc', np.nan))} "
            f"offline, logloss {_fmt(online['logloss'])} vs {_fmt(ref.get('logloss', np.nan))}, "
            f"calibration error {_fmt(online['calibration_error'])}"
        )
        flagged.append(text if v == "pass" else f"{text} [{v}]")
    if not per_arm:  # groupby leaves out rows whose arm or version is null
        return _not_assessed()
    return CheckResult("metric_gap", worst(verdicts), "; ".join(flagged), {"arms": per_arm})


# ----------------------------------------------------------------------------- freshness
def freshness(
    served: pd.DataFrame,
    views: Mapping[str, str],
    ttls: Mapping[str, timedelta | None],
    materialized: Mapping[str, datetime | None],
    cfg: MonitoringConfig,
) -> CheckResult:
    """Age of the newest online value per view at the newest served request (hours); views
    without a TTL (attributes) are reported, not graded."""
    now = pd.Timestamp(served[LOG_TIMESTAMP].max())
    per_view: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    flagged = []
    for view in sorted(set(views.values())):
        if view not in ttls:
            continue  # on-demand: computed per request
        columns = [f"{view}__{f}__timestamp" for f, v in views.items() if v == view]
        stamps = pd.concat([served[c] for c in columns if c in served.columns])
        newest = stamps.dropna().max() if len(stamps) else None
        age = (now - pd.Timestamp(newest)).total_seconds() / 3600 if newest is not None else None
        graded = ttls[view] is not None
        v: Verdict = _g(age, cfg.freshness_hours) if graded else "pass"
        verdicts.append(v)
        end = materialized.get(view)
        per_view[view] = {
            "newest_value": str(newest),
            "age_hours": age,
            "graded": graded,
            "materialized_to": str(end) if end else None,
            "verdict": v,
        }
        if v != "pass":
            flagged.append(f"{view} newest value {_fmt(age if age is not None else np.nan)} h old")
    summary = (
        "; ".join(flagged)
        if flagged
        else (
            "newest values: "
            + ", ".join(
                f"{k} {_fmt(d['age_hours'] or np.nan)} h"
                for k, d in per_view.items()
                if d["graded"]
            )
        )
    )
    return CheckResult("freshness", worst(verdicts), summary, {"views": per_view})
