"""Evaluation on the test split: metrics (overall and per segment), the oracle's truth, a
data profile and the ROC / calibration plots every model and baseline run logs.

Shared by the baseline run and the candidate runs, so that both are measured the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.paths import StatePaths

if TYPE_CHECKING:
    from rankflow.features.training_set import TrainingSet

log = logging.getLogger(__name__)


def load_truth(source: str, paths: StatePaths, frame: pd.DataFrame) -> pd.Series | None:
    """True p_click of ``frame``'s rows (``source: simulate`` only), by event_id; else None.

    None when the data is not the simulator's, or the truth files do not cover every row
    (e.g. the raw data was replaced after a simulation).
    """
    folder = paths.truth / "impressions"
    if source != "simulate" or not folder.is_dir() or frame.empty:
        return None
    import pyarrow as pa
    import pyarrow.dataset as ds

    ids = pa.array(frame["event_id"].astype(str).unique())
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["event_id", "p_click"], filter=ds.field("event_id").isin(ids))
    truth = table.to_pandas().drop_duplicates("event_id").set_index("event_id")["p_click"]
    if len(truth) < len(ids):
        log.warning(
            "truth in %s covers %d of %d test impressions: no oracle metrics",
            folder,
            len(truth),
            len(ids),
        )
        return None
    return truth


def evaluate_predictions(
    probs: np.ndarray,
    frame: pd.DataFrame,
    *,
    truth: pd.Series | None,
    baseline: np.ndarray | None,
    segment_columns: list[str],
) -> dict[str, float]:
    """``models.metrics.evaluate`` plus AUC per value of every configured segment column."""
    from models.metrics import evaluate

    metrics = evaluate(probs, frame, truth=truth, baseline=baseline)
    for column in segment_columns:
        if column not in frame.columns:
            log.warning("segment column %r is not in the test split; skipped", column)
            continue
        per_segment = evaluate(probs, frame, segment_col=column)
        metrics.update({k: v for k, v in per_segment.items() if k.startswith("auc_by_")})
    return metrics


def data_profile(training_set: TrainingSet) -> dict[str, Any]:
    """Per split: shape, positive rate, days; per column of train: type, nulls, spread."""
    profile: dict[str, Any] = {"training_set": training_set.describe(), "columns": {}}
    train = training_set.train
    for name in train.columns:
        column = train[name]
        entry: dict[str, Any] = {
            "dtype": str(column.dtype),
            "feature_type": training_set.feature_types.get(name),
            "null_share": {
                split: float(training_set.split(split)[name].isna().mean())
                if len(training_set.split(split))
                else None
                for split in ("train", "valid", "test")
            },
        }
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = pd.to_numeric(column, errors="coerce").dropna().astype("float64")
            if len(values):
                quantiles = values.quantile([0.01, 0.5, 0.99]).tolist()
                entry.update(
                    mean=float(values.mean()),
                    std=float(values.std(ddof=0)),
                    min=float(values.min()),
                    p01=quantiles[0],
                    p50=quantiles[1],
                    p99=quantiles[2],
                    max=float(values.max()),
                )
            entry["distinct"] = int(column.nunique(dropna=True))
        elif pd.api.types.is_datetime64_any_dtype(column):
            entry.update(min=str(column.min()), max=str(column.max()))
        else:
            counts = column.astype(object).value_counts(dropna=True)
            entry["distinct"] = len(counts)
            entry["top"] = {str(k): float(v / len(column)) for k, v in counts.head(5).items()}
        profile["columns"][str(name)] = entry
    return profile


def save_plots(
    folder: Path,
    label: np.ndarray,
    curves: Mapping[str, np.ndarray],
    *,
    title: str,
    bins: int,
) -> list[Path]:
    """ROC curves and a reliability diagram (equal-mass bins) as PNGs; their paths.

    Uses matplotlib's Agg canvas directly (no pyplot): no display, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(label, dtype=np.float64)
    two_classes = y.size > 0 and 0 < y.sum() < y.size

    roc = Figure(figsize=(5.5, 5), dpi=110)
    FigureCanvasAgg(roc)
    ax = roc.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, probs in curves.items():
        if not two_classes:
            break
        fpr, tpr, _ = roc_curve(y, probs)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, probs):.4f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC - {title}")
    ax.legend(loc="lower right", fontsize=8)
    roc_path = folder / "roc.png"
    roc.savefig(roc_path)

    cal = Figure(figsize=(5.5, 5), dpi=110)
    FigureCanvasAgg(cal)
    ax = cal.add_subplot()
    top = 0.0
    for name, probs in curves.items():
        p = np.asarray(probs, dtype=np.float64)
        if p.size == 0:
            continue
        order = np.argsort(p, kind="stable")
        chunks = [c for c in np.array_split(order, min(bins, p.size)) if c.size]
        mean_p = np.array([p[c].mean() for c in chunks])
        mean_y = np.array([y[c].mean() for c in chunks])
        top = max(top, float(mean_p.max()), float(mean_y.max()))
        ax.plot(mean_p, mean_y, marker="o", markersize=3, label=name)
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="calibrated")
    ax.set(
        xlabel="mean predicted CTR (equal-mass bins)",
        ylabel="observed CTR",
        title=f"Calibration - {title}",
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend(loc="upper left", fontsize=8)
    cal_path = folder / "calibration.png"
    cal.savefig(cal_path)
    return [roc_path, cal_path]
