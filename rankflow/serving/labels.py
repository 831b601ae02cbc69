"""Labels of replayed traffic, beside the served log: what was clicked of what was shown,
keyed by (``__request_id``, ``item_id``), the join key of the served-feature log. Any traffic
source writes them (log replay of a past day, the simulator's closed loop); the gap check's
metric gap reads them (:func:`rankflow.monitoring.report.labelled_served`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.serving.log_files import UnreadableFile, parquet_files, read_tables

if TYPE_CHECKING:
    from rankflow.paths import StatePaths

LABEL_COLUMNS = ("__request_id", "item_id", "position", "label", "p_true", "mode")


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
