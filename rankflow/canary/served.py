"""The live phase's served rows: the score log read as the service writes it.

The score log is read file by file, as the gap check reads it (:mod:`rankflow.serving.log_files`):
a file that does not read as parquet (copied half way, a stray file) is skipped and named, a row
whose request time pandas cannot hold is skipped and counted, and a request id scored twice (a
client retry) counts once, its last scoring (the response the client got). What was left out is
said on the look, so a phase never decides on less traffic than was served without saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from rankflow.registry.promotion import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from rankflow.paths import StatePaths
    from rankflow.serving.log_files import OutOfRange, UnreadableFile

COLUMNS = ["request_id", "item_id", "user_id", "arm", "p_click", "requested_at"]
EXAMPLES = 5


@dataclass
class PhaseRows:
    """The phase's served rows (``COLUMNS``) and what reading the log left out."""

    frame: pd.DataFrame
    unreadable: list[UnreadableFile] = field(default_factory=list)
    out_of_range: list[OutOfRange] = field(default_factory=list)
    retried_rows: int = 0  # rows of a (request id, item) scored again, counted once
    retried_examples: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line per kind of row or file left out; none for a clean log."""
        notes = [skip.line() for skip in self.out_of_range]
        if self.retried_rows:
            notes.append(
                f"{self.retried_rows} served rows repeat a (request_id, item_id) scored "
                f"before (client retries, e.g. {', '.join(self.retried_examples)}): each "
                "counts once, its last scoring"
            )
        if self.unreadable:
            notes.append(
                f"{len(self.unreadable)} unreadable score log file(s) skipped: "
                + "; ".join(u.line() for u in self.unreadable)
            )
        return notes

    def to_dict(self) -> dict[str, object]:
        return {
            "rows": len(self.frame),
            "retried_rows": self.retried_rows,
            "out_of_range_rows": sum(o.rows for o in self.out_of_range),
            "unreadable_files": [{"path": str(u.path), "error": u.error} for u in self.unreadable],
        }


def served_rows(
    paths: StatePaths, feature_service: str, champion: str, challenger: str, since: datetime
) -> PhaseRows:
    """The score log rows of the two versions, each in its own arm, scored (wall clock,
    ``__served_at``) from ``since`` on, with ``requested_at`` the request's own time. Score
    files from before ``__served_at`` existed count as before any phase."""
    import pyarrow as pa

    from rankflow.serving.log_files import drop_out_of_range, parquet_files, read_tables
    from rankflow.serving.served_log import LOG_TIMESTAMP, REQUEST_ID, SERVED_AT, score_log_dir

    tables, unreadable = read_tables(parquet_files(score_log_dir(paths, feature_service)))
    tables = [t for t in tables if SERVED_AT in t.column_names]
    if not tables:
        return PhaseRows(pd.DataFrame(columns=COLUMNS), unreadable)
    wanted = [REQUEST_ID, "item_id", "user_id", "arm", "model_version", "p_click"]
    wanted += [LOG_TIMESTAMP, SERVED_AT]
    # promote: a column a file lacks (written by an older service) reads as nulls
    table = pa.concat_tables(
        [t.select([c for c in wanted if c in t.column_names]) for t in tables],
        promote_options="default",
    )
    frame = table.to_pandas().rename(
        columns={REQUEST_ID: "request_id", LOG_TIMESTAMP: "requested_at"}
    )
    frame, out_of_range = drop_out_of_range(frame, "request_id")
    version = frame["model_version"].astype(str)
    in_arm = ((frame["arm"] == CHAMPION) & (version == str(champion))) | (
        (frame["arm"] == CHALLENGER) & (version == str(challenger))
    )
    start = pd.Timestamp(since)
    start = start.tz_localize("UTC") if start.tzinfo is None else start  # the log's are UTC
    frame = frame[in_arm & (frame[SERVED_AT] >= start)]
    frame = frame.sort_values(SERVED_AT, kind="stable")
    retried = frame.duplicated(["request_id", "item_id"], keep="last")
    examples = frame.loc[retried, "request_id"].drop_duplicates().head(EXAMPLES)
    frame = frame[~retried].reset_index(drop=True)[COLUMNS]
    return PhaseRows(
        frame,
        unreadable,
        out_of_range,
        retried_rows=int(retried.sum()),
        retried_examples=[str(r) for r in examples],
    )
