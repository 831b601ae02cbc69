"""The raw-data contract (docs/data-contract.md) as data, and the structural check of a raw folder.

``CONTRACT`` is the one definition of the raw columns: the simulator writes its schema, the
validator checks against it, and a unit test keeps the tables in the docs equal to it.

``validate_raw`` checks structure only: folders and files exist, every contract column is there
and castable to its type, and each impressions partition holds only rows of its own day.
Row-level problems (null keys, duplicates, unknown ids, impossible values) are not errors here:
dbt's staging quarantines those rows with a reason. The check reads Parquet footers first and
then only the columns it needs (``ts`` of impressions, plus any column whose stored type differs
from the contract), so a 1M-row dataset validates in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.data import raw_files
from rankflow.data.contract_types import count_uncastable, timestamps_utc_us, type_verdict
from rankflow.data.raw_files import RawListing, list_raw
from rankflow.errors import RankflowError
from rankflow.times import day_start_epoch_us

CONTRACT_DOC: Final = "docs/data-contract.md"

LogicalType = Literal["int64", "int32", "int8", "float64", "string", "timestamp"]

_ARROW_TYPES: Final[Mapping[str, pa.DataType]] = MappingProxyType(
    {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "int8": pa.int8(),
        "float64": pa.float64(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
)
_SQL_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "int64": "BIGINT",
        "int32": "INTEGER",
        "int8": "TINYINT",
        "float64": "DOUBLE",
        "string": "VARCHAR",
        "timestamp": "TIMESTAMPTZ",
    }
)


@dataclass(frozen=True)
class ColumnSpec:
    """One contract column: its logical type, whether nulls are allowed, and the row rule."""

    type: LogicalType
    nullable: bool
    rule: str
    key: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type a producer should write (timestamps as microseconds, UTC)."""
        return _ARROW_TYPES[self.type]

    @property
    def sql_type(self) -> str:
        """The DuckDB type staging casts the column to."""
        return _SQL_TYPES[self.type]


def _table(**columns: ColumnSpec) -> Mapping[str, ColumnSpec]:
    return MappingProxyType(dict(columns))


# table -> column -> spec, in the order of the tables in docs/data-contract.md.
CONTRACT: Final[Mapping[str, Mapping[str, ColumnSpec]]] = MappingProxyType(
    {
        "users": _table(
            user_id=ColumnSpec("int64", False, "key: not null, unique", key=True),
            segment=ColumnSpec("string", False, "not null"),
            age_bucket=ColumnSpec("string", True, "nullable"),
            region=ColumnSpec("string", True, "nullable"),
            signup_ts=ColumnSpec("timestamp", False, "not null; not in the future"),
        ),
        "items": _table(
            item_id=ColumnSpec("int64", False, "key: not null, unique", key=True),
            category=ColumnSpec("string", False, "not null"),
            price=ColumnSpec("float64", False, "not null, >= 0"),
            created_ts=ColumnSpec("timestamp", False, "not null; not in the future"),
        ),
        "impressions": _table(
            event_id=ColumnSpec("string", False, "key: not null, unique across all days", key=True),
            request_id=ColumnSpec("string", False, "not null; impressions shown together share it"),
            ts=ColumnSpec("timestamp", False, "not null; within the partition's day"),
            user_id=ColumnSpec("int64", False, "not null; must exist in users"),
            item_id=ColumnSpec("int64", False, "not null; must exist in items"),
            position=ColumnSpec("int32", False, "not null, 1..100 (1 = top slot)"),
            device=ColumnSpec("string", False, "not null, one of mobile, desktop, tablet"),
            clicked=ColumnSpec("int8", False, "not null, 0 or 1"),
        ),
    }
)

# Impressions are Hive-partitioned by the UTC day of this column: impressions/event_date=D/.
PARTITION_KEY: Final = raw_files.PARTITION_KEY
PARTITIONED_TABLES: Final[Mapping[str, str]] = MappingProxyType({"impressions": "ts"})
DEVICES: Final = ("mobile", "desktop", "tablet")


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema a producer writes for ``table`` (types and nullability of the contract)."""
    return pa.schema(
        [
            pa.field(name, spec.arrow_type, nullable=spec.nullable)
            for name, spec in CONTRACT[table].items()
        ]
    )


def partition_dir(raw_dir: Path, table: str, day: date) -> Path:
    """The folder that holds one UTC day of a partitioned table."""
    return Path(raw_dir) / table / f"{PARTITION_KEY}={day.isoformat()}"


# --------------------------------------------------------------------------------------------
# Errors and the inventory


@dataclass(frozen=True)
class ContractProblem:
    """One structural problem; ``where`` is a path relative to the raw folder's parent."""

    where: str
    column: str | None
    problem: str
    expected: str
    bad_count: int | None = None
    total: int | None = None

    def __str__(self) -> str:
        subject = f"column '{self.column}' " if self.column else ""
        text = f"{self.where}: {subject}{self.problem}, expected {self.expected}"
        if self.bad_count is not None:
            text += f": {self.bad_count} of {self.total} values cannot be cast"
        return text


class ContractError(RankflowError, ValueError):
    """Raw data that does not follow docs/data-contract.md; lists every structural problem.

    The message is one line (problems joined by "; "), so the CLI prints it as it prints every
    other user-facing error; ``problems`` keeps them apart for code.
    """

    def __init__(self, raw_dir: Path, problems: list[ContractProblem]) -> None:
        self.raw_dir = Path(raw_dir)
        self.problems = list(problems)
        count = len(self.problems)
        header = (
            f"raw data in {self.raw_dir} does not follow {CONTRACT_DOC} "
            f"({count} problem{'s' if count != 1 else ''}): "
        )
        super().__init__(header + "; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class RawInventory:
    """What a valid raw folder holds, as found by ``validate_raw``."""

    raw_dir: Path
    files: dict[str, list[Path]]
    rows: dict[str, int]
    partition_dates: list[date]
    extra_columns: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not data: hidden, not parquet, too deep
    listing: RawListing | None = None  # the file list the warehouse build loads
    decoded: list[str] = field(default_factory=list)  # files read page by page (all or `deep`)
    values_read: list[str] = field(default_factory=list)  # files the value rules read (untrusted)

    def __str__(self) -> str:
        lines = [f"raw data in {self.raw_dir} follows {CONTRACT_DOC}"]
        for table in CONTRACT:
            lines.append(
                f"  {table:<12} {self.rows.get(table, 0):>10,} rows in "
                f"{len(self.files.get(table, []))} file(s)"
            )
        if self.partition_dates:
            lines.append(
                f"  partitions   {len(self.partition_dates)} days, "
                f"{self.partition_dates[0]} .. {self.partition_dates[-1]}"
            )
        total = sum(len(files) for files in self.files.values())
        lines.append(f"  pages decoded in {len(self.decoded)} of {total} file(s)")
        if len(self.values_read) < total:
            lines.append(
                f"  values read in {len(self.values_read)} of {total} file(s) (the others passed "
                "this check unchanged before)"
            )
        for where, columns in self.extra_columns.items():
            lines.append(f"  extra columns (kept, not used) in {where}: {', '.join(columns)}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.skipped:
            lines.append(f"  skipped (not data, never loaded): {', '.join(self.skipped)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The check


def validate_raw(
    raw_dir: Path,
    *,
    deep: Collection[Path] | None = None,
    trusted: Collection[Path] = (),
) -> RawInventory:
    """Check the structure of a raw folder against the contract; raise ``ContractError`` listing
    every problem found (missing folder or files, missing column, uncastable type with the count
    of bad values, impressions partitions holding rows of another day, unreadable pages).

    The files checked are exactly those ``raw_files.list_raw`` lists, the ones a build loads.
    Files in ``deep`` (default: every file) are also decoded page by page, every row group and
    column, so a file with a valid footer but corrupt data fails here, named, not inside dbt.
    Files in ``trusted`` passed this check before with the same content (the warehouse build's
    manifest says so): only their footers are read (columns present, types acceptable); the
    rules that read values (casts, the partition day) are not run on them again, so a daily
    build does not re-read the whole history's timestamps.
    """
    raw_dir = Path(raw_dir)
    checker = _Checker(raw_dir)
    if not raw_dir.is_dir():
        checker.problem(raw_dir.name, None, "folder is missing", "users/, items/, impressions/")
        raise ContractError(raw_dir, checker.problems)

    listing = list_raw(raw_dir)
    checker.raw_dir = listing.raw_dir  # labels relative to the resolved folder
    for layout in listing.problems:
        suffix = "/" if not layout.path.suffix else ""
        checker.problem(checker.label(layout.path) + suffix, None, layout.problem, layout.expected)
    deep_set = None if deep is None else {Path(p).resolve() for p in deep}
    listed = [path for files in listing.files.values() for path in files]
    decoded = {path for path in listed if deep_set is None or path in deep_set}
    trusted_set = {Path(p).resolve() for p in trusted} - decoded
    rows: dict[str, int] = {}
    for table in CONTRACT:
        table_files = listing.files[table]
        _note_empty(checker, listing, table)
        counts = [
            checker.check_file(table, path, path in decoded, values=path not in trusted_set)
            for path in table_files
        ]
        rows[table] = sum(n or 0 for n in counts)
        if counts and None not in counts and rows[table] == 0:
            checker.problem(
                f"{checker.label(raw_dir / table)}/", None, "has no rows", "at least one row"
            )
    for child in sorted(listing.raw_dir.iterdir()):
        if child.is_dir() and child.name not in CONTRACT and not raw_files.is_hidden(child):
            checker.notes.append(f"{checker.label(child)}/ is not a contract table; ignored")

    if checker.problems:
        raise ContractError(raw_dir, checker.problems)
    return RawInventory(
        raw_dir=raw_dir,
        files=listing.files,
        rows=rows,
        partition_dates=[day for day, files in listing.partitions.items() if files],
        extra_columns=checker.extra_columns,
        notes=checker.notes,
        skipped=[listing.label(p) for p in listing.skipped],
        listing=listing,
        decoded=[checker.label(path) for path in listed if path in decoded],
        values_read=[checker.label(path) for path in listed if path not in trusted_set],
    )


def _note_empty(checker: _Checker, listing: RawListing, table: str) -> None:
    """A table folder without data files is a problem; an empty partition only a note."""
    folder = listing.raw_dir / table
    if not folder.is_dir():
        return
    strays = [p for p in listing.problems if p.path.parent == folder and p.path.suffix]
    if not listing.files[table] and not strays:
        checker.problem(
            f"{checker.label(folder)}/", None, "has no parquet files", raw_files.layout(table)
        )
    if table in PARTITIONED_TABLES:
        for day, files in listing.partitions.items():
            if not files:
                where = f"{checker.label(folder / f'{PARTITION_KEY}={day.isoformat()}')}/"
                checker.notes.append(f"{where} has no parquet files (a day without data)")


class _Checker:
    """Collects problems and notes while walking one raw folder."""

    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir
        self.problems: list[ContractProblem] = []
        self.notes: list[str] = []
        self.extra_columns: dict[str, list[str]] = {}

    def label(self, path: Path) -> str:
        return f"{self.raw_dir.name}/{path.relative_to(self.raw_dir).as_posix()}"

    def problem(
        self, where: str, column: str | None, problem: str, expected: str, **counts: int
    ) -> None:
        self.problems.append(ContractProblem(where, column, problem, expected, **counts))

    def check_file(
        self, table: str, path: Path, deep: bool = True, *, values: bool = True
    ) -> int | None:
        """Check one file's columns and (for partitions) its days; return its row count
        (None if the file cannot be read). ``deep`` decodes every page of every row group;
        ``values=False`` (a file that passed before, unchanged) skips the rules that read values."""
        where = self.label(path)
        try:
            with pq.ParquetFile(path, page_checksum_verification=True) as parquet:
                self._check_columns(table, path, where, parquet, read_values=values)
                if deep:
                    for group in range(parquet.num_row_groups):
                        parquet.read_row_group(group)
                return parquet.metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            self.problem(where, None, f"is not a readable parquet file ({error})", "Apache Parquet")
            return None

    def _check_columns(
        self,
        table: str,
        path: Path,
        where: str,
        parquet: pq.ParquetFile,
        *,
        read_values: bool = True,
    ) -> None:
        schema = parquet.schema_arrow
        n_rows = parquet.metadata.num_rows
        contract = CONTRACT[table]
        extra = [name for name in schema.names if name not in contract]
        if extra:
            self.extra_columns[where] = extra
        ts_column = PARTITIONED_TABLES.get(table)
        for name, spec in contract.items():
            if name not in schema.names:
                nulls = "nullable" if spec.nullable else "not null"
                self.problem(where, name, "is missing", f"{spec.type} ({nulls}) per {CONTRACT_DOC}")
                continue
            arrow_type = schema.field(name).type
            verdict, note = type_verdict(spec.type, arrow_type)
            if note:
                self.notes.append(f"{where}: column '{name}' {note}")
            # Only read values when they must be looked at: a cast to check, or the partition day.
            if verdict == "ok" and name != ts_column:
                continue
            if not read_values:
                # Unchanged since it passed: its values were castable (or all null) then.
                if verdict != "ok":
                    self.notes.append(_casts_note(where, name, arrow_type, spec.type))
                continue
            values = parquet.read(columns=[name]).column(0)
            if verdict != "ok":
                bad = (
                    count_uncastable(values, spec.type)
                    if verdict == "cast"
                    else values.length() - values.null_count
                )
                if bad:
                    self.problem(
                        where,
                        name,
                        f"has type {arrow_type}",
                        spec.type,
                        bad_count=bad,
                        total=n_rows,
                    )
                else:
                    self.notes.append(_casts_note(where, name, arrow_type, spec.type))
            if name == ts_column:
                self._check_partition_day(path, where, name, values)

    def _check_partition_day(
        self, path: Path, where: str, column: str, values: pa.ChunkedArray
    ) -> None:
        day = raw_files.parse_partition(path.parent.name)
        if day is None:
            return
        micros, valid = timestamps_utc_us(values)
        start = day_start_epoch_us(day)
        end = day_start_epoch_us(day + timedelta(days=1))
        outside = valid & ((micros < start) | (micros >= end))
        n_outside = int(outside.sum())
        if not n_outside:
            return
        other_days = np.unique(micros[outside] // 86_400_000_000)
        shown = ", ".join(str(date(1970, 1, 1) + timedelta(days=int(d))) for d in other_days[:3])
        more = f" and {len(other_days) - 3} more days" if len(other_days) > 3 else ""
        self.problem(
            where,
            column,
            f"has {n_outside} of {len(micros)} rows outside its partition day "
            f"(rows from {shown}{more})",
            f"{day} 00:00 <= {column} < {day + timedelta(days=1)} 00:00 UTC",
        )


def _casts_note(where: str, name: str, arrow_type: pa.DataType, logical: str) -> str:
    return f"{where}: column '{name}' has type {arrow_type}; every value casts to {logical}"
