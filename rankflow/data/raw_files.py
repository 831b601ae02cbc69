"""The one reader of a raw folder: which files are data, per table and per partition day.

Both the contract check (``rankflow.data.contract.validate_raw``) and the warehouse build
(``rankflow.warehouse.build``) take their file list from ``list_raw``, so they cannot disagree
about what is loaded: files and folders whose names start with ``_`` or ``.`` (``_SUCCESS``,
``.crc``, Spark's ``_temporary/``, the simulator's marker) and files that are not ``*.parquet``
are skipped and listed in ``RawListing.skipped``; dbt never globs the folder itself.

Layout problems (a missing table folder, a parquet file outside a partition folder, a folder
that is not ``event_date=YYYY-MM-DD``) are returned as ``LayoutProblem`` values for the
contract check to report, not raised here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Final

TABLES: Final = ("users", "items", "impressions")
PARTITION_KEY: Final = "event_date"
PARTITIONED: Final = frozenset({"impressions"})
_PARTITION_RE = re.compile(rf"^{PARTITION_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LayoutProblem:
    """A path that breaks the folder layout; ``path`` is absolute, ``expected`` the layout."""

    path: Path
    problem: str
    expected: str


@dataclass(frozen=True)
class RawListing:
    """The data files of a raw folder, in a stable order (sorted by path)."""

    raw_dir: Path
    files: dict[str, list[Path]]  # table -> files (impressions: every partition's files)
    partitions: dict[date, list[Path]]  # impressions day -> its files (a day may have none)
    skipped: list[Path] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)

    def partition_of(self, path: Path) -> date | None:
        """The partition day of an impressions file (None for users / items files)."""
        match = _PARTITION_RE.match(path.parent.name)
        return date.fromisoformat(match.group(1)) if match else None

    def label(self, path: Path) -> str:
        """``raw/<relative path>``: how messages name a file."""
        return f"{self.raw_dir.name}/{path.relative_to(self.raw_dir).as_posix()}"


def layout(table: str) -> str:
    """Where a table's files go, as the contract writes it."""
    if table in PARTITIONED:
        return f"{table}/{PARTITION_KEY}=YYYY-MM-DD/*.parquet"
    return f"{table}/*.parquet"


def is_hidden(path: Path) -> bool:
    """Producers leave markers like ``_SUCCESS``, ``.crc`` or ``_temporary/``; they are not data."""
    return path.name.startswith((".", "_"))


def parse_partition(name: str) -> date | None:
    """The day of a partition folder name ``event_date=YYYY-MM-DD`` (None if it is not one)."""
    match = _PARTITION_RE.match(name)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def list_raw(raw_dir: Path) -> RawListing:
    """List the data files of ``raw_dir`` by the contract's rules (see the module docstring)."""
    raw_dir = Path(raw_dir).resolve()
    files: dict[str, list[Path]] = {}
    partitions: dict[date, list[Path]] = {}
    skipped: list[Path] = []
    problems: list[LayoutProblem] = []
    for table in TABLES:
        folder = raw_dir / table
        expected = layout(table)
        if not folder.is_dir():
            problems.append(LayoutProblem(folder, "folder is missing", expected))
            files[table] = []
            continue
        data, dirs = _data_files(folder, skipped)
        if table not in PARTITIONED:
            skipped += dirs  # sub-folders of users/ items/ are not read
            files[table] = data
            continue
        problems += [LayoutProblem(p, "lies outside a partition folder", expected) for p in data]
        files[table] = []
        for child in dirs:
            day = parse_partition(child.name)
            if day is None:
                problems.append(LayoutProblem(child, "is not a partition folder", expected))
                continue
            day_files, nested = _data_files(child, skipped)
            skipped += nested  # partitions are one level deep; deeper folders are not read
            partitions[day] = day_files
            files[table] += day_files
    return RawListing(raw_dir, files, dict(sorted(partitions.items())), sorted(skipped), problems)


def _data_files(folder: Path, skipped: list[Path]) -> tuple[list[Path], list[Path]]:
    """(parquet data files, visible sub-folders) of one folder; the rest goes to ``skipped``."""
    data, dirs = [], []
    for child in sorted(folder.iterdir()):
        if is_hidden(child):
            skipped.append(child)
        elif child.is_dir():
            dirs.append(child)
        elif child.is_file() and child.suffix == ".parquet":
            data.append(child)
        else:
            skipped.append(child)
    return data, dirs


def fingerprint(path: Path) -> str:
    """A content hash of one file (blake2b, 128 bits): equal bytes, equal fingerprint.

    Content, not size or mtime, decides whether a partition changed: a re-simulation can
    rewrite a file with the same size, and a copy keeps the bytes but not the mtime.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
