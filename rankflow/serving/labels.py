"""Labels of replayed traffic, beside the served log: what was clicked of what was shown,
keyed by (``__request_id``, ``item_id``), the join key of the served-feature log. Any traffic
source writes them (log replay of a past day, the simulator's closed loop); the gap check's
metric gap reads them (:func:`rankflow.monitoring.report.labelled_served`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.serving.log_files import UnreadableFile, parquet_files, read_tables

if TYPE_CHECKING:
    from rankflow.paths import StatePaths

LABEL_COLUMNS = ("__request_id", "item_id", "position", "label", "p_true", "mode")
LABEL_KEY = ["__request_id", "item_id"]
EXAMPLES = 5


def labels_dir(paths: StatePaths, service: str) -> Path:
    """Labels of replayed traffic, joined to the served log by (``__request_id``, item_id)."""
    return paths.logs / service / "labels"


def write_labels(paths: StatePaths, service: str, labels: pd.DataFrame, name: str) -> Path:
    folder = labels_dir(paths, service)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.parquet"
    pq.write_table(pa.Table.from_pandas(labels, preserve_index=False), target)
    return target


def read_labels(paths: StatePaths, service: str) -> pd.DataFrame:
    return load_labels(paths, service)[0]


def load_labels(paths: StatePaths, service: str) -> tuple[pd.DataFrame, list[UnreadableFile]]:
    """The labels, and the files that did not read (skipped, the others still read)."""
    tables, unreadable = read_tables(parquet_files(labels_dir(paths, service)))
    if not tables:
        return pd.DataFrame(columns=list(LABEL_COLUMNS)), unreadable
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True), unreadable


@dataclass
class LabelMatch:
    """Served rows joined with their labels, and what the join could not use: labels that
    repeat a key (a replay written twice), and labels no served row matches (the service did
    not log that impression: logging off, a log folder removed, rows dropped)."""

    frame: pd.DataFrame
    labels: int = 0  # distinct labelled impressions considered
    repeated: int = 0  # label rows beyond the first of their key
    disagreeing: int = 0  # keys whose repeated rows disagree on the click
    unmatched: int = 0  # labelled impressions without a served row
    unmatched_examples: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of label left out; none when every label joined once."""
        notes = []
        if self.repeated:
            disagree = (
                f", {self.disagreeing} of them with another click: the last written is kept"
                if self.disagreeing
                else ""
            )
            notes.append(
                f"{self.repeated} label rows repeat a (__request_id, item_id) already labelled "
                f"(a replay written twice?): each impression counts once{disagree}"
            )
        if self.unmatched:
            notes.append(
                f"{self.unmatched} of {self.labels} labelled impressions have no served row "
                "(the service did not log them: logging off, a log folder removed, rows "
                f"dropped; e.g. request ids {', '.join(self.unmatched_examples)}): the metric "
                f"gap judges the {len(self.frame)} that do"
            )
        return notes

    def to_dict(self) -> dict[str, int]:
        return {
            "labelled_impressions": self.labels,
            "joined": len(self.frame),
            "repeated_label_rows": self.repeated,
            "disagreeing_keys": self.disagreeing,
            "unmatched_labels": self.unmatched,
        }


def match_labels(
    served: pd.DataFrame, labels: pd.DataFrame, modes: tuple[str, ...] = ("log",)
) -> LabelMatch:
    """The served rows that have a label of ``modes``, each impression once (the label
    written last), with what was left out (:class:`LabelMatch`)."""
    labels = labels[labels["mode"].isin(modes)].drop(columns=["position"])
    repeated = labels.duplicated(LABEL_KEY, keep="last")
    clicks = labels.groupby(LABEL_KEY, sort=False)["label"].nunique()
    labels = labels[~repeated]
    if served.empty or labels.empty:
        return LabelMatch(pd.DataFrame(), len(labels), int(repeated.sum()))
    served_keys = served[LABEL_KEY].drop_duplicates()
    found = labels.merge(served_keys, on=LABEL_KEY, how="left", indicator=True)["_merge"]
    missing = labels.loc[(found == "left_only").to_numpy(), "__request_id"]
    return LabelMatch(
        served.merge(labels, on=LABEL_KEY, how="inner"),
        labels=len(labels),
        repeated=int(repeated.sum()),
        disagreeing=int((clicks > 1).sum()),
        unmatched=len(missing),
        unmatched_examples=[str(r) for r in missing.drop_duplicates().head(EXAMPLES)],
    )
