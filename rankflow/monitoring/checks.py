"""The five gap checks over the served log, each a pass / warn / fail with its numbers.

Inputs are frames the report module loads (rankflow/monitoring/report.py): the served rows
(Feast's log schema joined with the score log), the same rows' features recomputed offline by
``get_historical_features`` at ``__log_timestamp``, a reference sample of the training window,
the labels of replayed traffic, and the models of the versions that served. Each check returns a
:class:`CheckResult` whose summary names the features or versions that failed.
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
    Verdict,
    adversarial_validation,
    calibration_error,
    compare_values,
    grade,
    ks,
    psi,
    worst,
)

ROW = "__row"
LOG_TIMESTAMP = "__log_timestamp"


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


# ------------------------------------------------------------------------- feature skew
def feature_skew(
    served: pd.DataFrame,
    offline: pd.DataFrame,
    views: Mapping[str, str],
    cfg: MonitoringConfig,
) -> CheckResult:
    """Served ``<view>__<feature>`` against the point-in-time value at ``__log_timestamp``.

    ``offline`` is aligned row by row with ``served``. Mismatch rate and largest difference per
    feature; the verdict names every feature over the warn threshold, with an example pair.
    """
    per_feature: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    flagged = []
    for feature, view in views.items():
        column = f"{view}__{feature}"
        if column not in served.columns or feature not in offline.columns:
            continue
        cmp = compare_values(
            served[column].to_numpy(), offline[feature].to_numpy(), cfg.feature_tolerance
        )
        verdict = _g(cmp.rate, cfg.feature_mismatch_rate)
        verdicts.append(verdict)
        per_feature[feature] = {
            "view": view,
            "rows": cmp.rows,
            "mismatch_rate": cmp.rate,
            "max_abs_diff": cmp.max_abs_diff,
            "example": cmp.example,
            "verdict": verdict,
        }
        if verdict != "pass":
            flagged.append(f"{view}:{feature} {cmp.rate:.2%} ({cmp.example})")
    verdict = worst(verdicts)
    summary = (
        f"{len(per_feature)} features on {len(served):,} rows match the point-in-time values"
        if not flagged
        else f"{len(flagged)} feature(s) differ: " + "; ".join(flagged[:6])
    )
    return CheckResult("feature_skew", verdict, summary, {"features": per_feature})


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
    served and (b) the features recomputed offline. (a) isolates the model and transform, (b)
    is the end-to-end offline/online difference."""
    per_version: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    flagged = []
    for version, rows in served.groupby("model_version"):
        scorer = scorers.get(str(version))
        if scorer is None:
            verdicts.append("fail")
            flagged.append(f"v{version}: not a registered version of the serving model")
            continue
        index = rows.index
        logged = rows["p_click"].to_numpy(np.float64)
        same = np.abs(scorer.predict_proba(served_inputs.loc[index]) - logged)
        full = np.abs(scorer.predict_proba(offline_inputs.loc[index]) - logged)
        worst_diff = float(max(same.max(), full.max()))
        verdict = _g(worst_diff, cfg.score_abs_diff)
        verdicts.append(verdict)
        cause = "model/transform" if same.max() >= cfg.score_abs_diff.warn else "features"
        per_version[str(version)] = {
            "rows": len(rows),
            "max_abs_diff_served_features": float(same.max()),
            "max_abs_diff_offline_features": float(full.max()),
            "mean_abs_diff_offline_features": float(full.mean()),
            "verdict": verdict,
        }
        if verdict != "pass":
            flagged.append(f"v{version}: max |online - offline| {_fmt(worst_diff)} ({cause})")
    verdict = worst(verdicts)
    summary = (
        "logged scores equal offline batch scores of versions "
        + ", ".join(f"v{v}" for v in per_version)
        if not flagged
        else "; ".join(flagged)
    )
    return CheckResult("score_skew", verdict, summary, {"versions": per_version})


# -------------------------------------------------------------------------------- drift
def drift(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], cfg: MonitoringConfig
) -> CheckResult:
    """Training window vs serving window: PSI and KS per feature, and the adversarial
    classifier whose top features say what moved."""
    features = [f for f in features if f in reference.columns and f in current.columns]
    per_feature: dict[str, dict[str, Any]] = {}
    verdicts: list[Verdict] = []
    for name in features:
        value_psi = psi(reference[name], current[name])
        stat, pvalue = (float("nan"), float("nan"))
        if pd.api.types.is_numeric_dtype(reference[name]):
            stat, pvalue = ks(reference[name], current[name])
        v = worst(
            [
                _g(value_psi, cfg.psi),
                grade(stat, cfg.ks.warn, cfg.ks.fail) if np.isfinite(stat) else "pass",
            ]
        )
        verdicts.append(v)
        per_feature[name] = {"psi": value_psi, "ks": stat, "ks_pvalue": pvalue, "verdict": v}
    adv = adversarial_validation(reference[features], current[features], seed=cfg.seed)
    adv_verdict = _g(adv.lift, cfg.adversarial_auc_lift)
    verdicts.append(adv_verdict)
    moved = sorted(per_feature, key=lambda n: -per_feature[n]["psi"])
    flagged = [
        f"{n} (PSI {_fmt(per_feature[n]['psi'])})"
        for n in moved
        if per_feature[n]["verdict"] != "pass"
    ]
    top = ", ".join(f"{n} {_fmt(v)}" for n, v in adv.top_features[:3])
    summary = (
        f"adversarial AUC {_fmt(adv.auc)} vs permutation {_fmt(adv.baseline_auc)} "
        f"(lift {_fmt(adv.lift)}; top: {top})"
    )
    summary = (
        "moved: " + ", ".join(flagged[:6]) + "; " if flagged else "no feature moved; "
    ) + summary
    details = {
        "features": per_feature,
        "adversarial": {
            "auc": adv.auc,
            "baseline_auc": adv.baseline_auc,
            "lift": adv.lift,
            "top_features": adv.top_features,
            "verdict": adv_verdict,
        },
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    return CheckResult("drift", worst(verdicts), summary, details)


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
