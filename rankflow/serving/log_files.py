"""Reading log folders as production writes them: files written in place, times far away.

Feast's file logging writes each flush straight into the log folder under its final name, so a
reader can meet a file that is empty (just created) or half written, or a stray file that is not
parquet at all. A log folder is read file by file: a file that does not read is skipped and
named with its error, and the other files are still read.

Parquet and Arrow hold times in microseconds, so a far date the service accepted (a request
``time`` of 9999-12-31 or 0001-01-01) is logged and reads back; pandas holds nanoseconds
(1677-09-21 .. 2262-04-11), and Feast's point-in-time join converts the rows' times with it.
Rows with such a time are skipped and named (:func:`drop_out_of_range`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

EXAMPLES = 5  # keys named per kind of skipped row


@dataclass(frozen=True)
class UnreadableFile:
    """A log file left out of a read, and why."""

    path: Path
    error: str

    def line(self) -> str:
        return f"{self.path} ({self.error})"


def parquet_files(folder: Path) -> list[Path]:
    """The folder's parquet files in name order; none if the folder does not exist."""
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def read_tables(files: Iterable[Path]) -> tuple[list[pa.Table], list[UnreadableFile]]:
    """Each file that reads as parquet, and the files that do not (with their errors)."""
    tables: list[pa.Table] = []
    unreadable: list[UnreadableFile] = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowException, OSError) as error:
            # Arrow's message repeats the path, which the line already starts with.
            message = str(error).replace(f" '{file}'", "")
            reason = f"{type(error).__name__}: {message}"
            unreadable.append(UnreadableFile(file, reason))
            log.warning("%s: skipped, it does not read as parquet: %s", file, reason)
    return tables, unreadable


@dataclass(frozen=True)
class OutOfRange:
    """Rows left out of a read because ``column`` holds a time pandas cannot represent."""

    column: str
    rows: int
    key: str  # the column that names the rows
    examples: list[str]  # up to EXAMPLES of the key's values
    value: str  # one of the times found

    def line(self) -> str:
        return (
            f"{self.rows} row(s) skipped: {self.column} {self.value} is outside the times "
            f"pandas and Feast's point-in-time join hold ({time_range()}); "
            f"{self.key} {', '.join(self.examples)}"
        )


def time_range() -> str:
    import pandas as pd

    return f"{pd.Timestamp.min.date()} .. {pd.Timestamp.max.date()}"


def drop_out_of_range(frame: pd.DataFrame, key: str) -> tuple[pd.DataFrame, list[OutOfRange]]:
    """``frame`` without the rows that hold a time outside pandas' range in any time column,
    and those rows per column (a row is counted once, under the first such column)."""
    import pandas as pd

    keep = pd.Series(True, index=frame.index)
    skipped: list[OutOfRange] = []
    for column in frame.columns:
        if not pd.api.types.is_datetime64_any_dtype(frame[column]):
            continue
        outside = keep & _outside(frame[column])
        if not outside.any():
            continue
        rows = frame.loc[outside]
        examples = [str(k) for k in rows[key].drop_duplicates().head(EXAMPLES)]
        skip = OutOfRange(column, int(outside.sum()), key, examples, str(rows[column].iloc[0]))
        log.warning("reading a log: %s", skip.line())
        skipped.append(skip)
        keep &= ~outside
    return frame.loc[keep], skipped


def _outside(values: pd.Series) -> pd.Series:
    """True where a time lies outside pandas' nanosecond range (nulls are inside)."""
    import pandas as pd

    earliest, latest = pd.Timestamp.min, pd.Timestamp.max
    if values.dt.tz is not None:
        earliest, latest = earliest.tz_localize("UTC"), latest.tz_localize("UTC")
    return (values < earliest) | (values > latest)
