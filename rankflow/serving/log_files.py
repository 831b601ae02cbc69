"""Reading log folders whose files are written in place while they are read.

Feast's file logging writes each flush straight into the log folder under its final name, so a
reader can meet a file that is empty (just created) or half written, or a stray file that is not
parquet at all. A log folder is read file by file: a file that does not read is skipped and
named with its error, and the other files are still read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


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
