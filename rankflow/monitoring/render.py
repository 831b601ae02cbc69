"""The gap-check report: ``report.md`` with PNG plots and ``summary.json``, in one folder.

Markdown rather than HTML: MLflow's artifact viewer shows it, and it diffs in review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankflow.monitoring.outcome import GapCheckOutcome


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def _psi_plot(outcome: GapCheckOutcome, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drift = next(c for c in outcome.checks if c.name == "drift").details.get("features", {})
    if not drift:
        return False
    names = sorted(drift, key=lambda n: drift[n]["psi"])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(names) + 1.5))
    ax.barh(names, [drift[n]["psi"] for n in names], color="#4477aa")
    ax.set_xlabel("PSI, reference days -> served rows")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _score_plot(served: pd.DataFrame, inputs: pd.DataFrame, scorers: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    drawn = False
    for version, rows in served.groupby("model_version"):
        scorer = scorers.get(str(version))
        if scorer is None:
            continue
        offline = scorer.predict_proba(inputs.loc[rows.index])
        ax.scatter(offline, rows["p_click"], s=4, alpha=0.5, label=f"v{version}")
        drawn = True
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offline batch score (point-in-time features)")
    ax.set_ylabel("logged online score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return drawn


def write_report(
    outcome: GapCheckOutcome, served: pd.DataFrame, offline_inputs: pd.DataFrame, scorers: dict
) -> None:
    folder = outcome.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    write_json(outcome, folder / "summary.json")
    lines = [
        f"# Gap check: {outcome.verdict.upper()}",
        "",
        f"Model {outcome.context.get('model')} version {outcome.model_version}; served rows "
        f"{outcome.context.get('served_rows')}, checked {outcome.context.get('checked_rows')}, "
        f"labelled {outcome.context.get('labelled_rows')}; log window "
        f"{' .. '.join(outcome.context.get('log_window', []))}; training window "
        f"{outcome.context.get('training_window')}.",
        "",
        "| check | verdict | summary |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {c.verdict} | {c.summary} |" for c in outcome.checks]
    if outcome.notes:
        lines += ["", "## Served log: left out of the checks", ""]
        lines += [f"- {note}" for note in outcome.notes]
    features = next(c for c in outcome.checks if c.name == "feature_skew").details.get(
        "features", {}
    )
    if features:
        lines += [
            "",
            "## Feature skew",
            "",
            "| feature | view | mismatch rate | max diff |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {f['view']} | {_fmt(f['mismatch_rate'])} | {_fmt(f['max_abs_diff'])} |"
            for n, f in features.items()
        ]
    if _psi_plot(outcome, folder / "psi.png"):
        lines += ["", "## Drift", "", "![PSI per feature](psi.png)"]
    if _score_plot(served, offline_inputs, scorers, folder / "scores.png"):
        lines += ["", "## Score skew", "", "![online vs offline scores](scores.png)"]
    (folder / "report.md").write_text("\n".join(lines) + "\n")


def write_json(outcome: GapCheckOutcome, path: Path) -> None:
    path.write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
