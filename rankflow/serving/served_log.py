"""The served-feature log: what the service served, in Feast's own logging schema.

Feast's Python feature server logs nothing by itself (only the retired Go server did); the SDK
half is there: a ``LoggingConfig(FileLoggingDestination(path))`` on the feature service (set in
``feature_repo/feature_services.py``) and ``FeatureStore.write_logged_features(table, service)``.
:class:`ServedLogWriter` fills that in for the scoring service:

- a request only appends its rows to a bounded in-memory buffer (O(1), under a lock held for
  the append); when ``buffer_rows`` rows are already waiting the rows are dropped and counted
  (``rankflow_log_rows_total{outcome="dropped"}``), so a slow or full disk never blocks or fails
  a request;
- a background thread flushes every ``flush_seconds`` or at ``flush_rows`` rows: one Arrow
  table in the schema Feast derives from the service (join keys, request fields,
  ``<view>__<feature>`` with ``__timestamp`` / ``__status``, ``__log_timestamp``,
  ``__log_date``, ``__request_id``) as a parquet file in the service's Feast logging
  destination (what ``write_logged_features`` writes there; :func:`log_sink` says why not
  through it), and beside it a score table (``__request_id``, ``item_id``, ``p_click``,
  ``rank``, model name / version, arm) in its own folder, joined to the features by
  (``__request_id``, ``item_id``).

The sink creates both folders before every write (they may have been removed while the
service runs).
Read back with :func:`load_served_log` (``__log_date`` is dropped on read, as Feast's own
``retrieve_feature_service_logs`` does). It takes the log as production writes it, where a
request id can repeat (client retries), a time can lie beyond what pandas holds, and a file can
be half written. It keeps each row once, skips the rest and says what it left out
(:class:`ServedLog`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from rankflow.serving.log_files import (
    EXAMPLES,
    OutOfRange,
    UnreadableFile,
    drop_out_of_range,
    parquet_files,
    read_tables,
)

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureService, FeatureStore

    from rankflow.paths import StatePaths
    from rankflow.serving.metrics import ServiceMetrics

log = logging.getLogger(__name__)

LOG_TIMESTAMP = "__log_timestamp"
LOG_DATE = "__log_date"
REQUEST_ID = "__request_id"
# Wall-clock time the service scored the row (``__log_timestamp`` is the request's own time,
# which a replay of a past day sets in the past): what a live canary phase counts from.
SERVED_AT = "__served_at"
# One served row, and one serving of it (a retry serves the same row again).
ROW_KEY = [REQUEST_ID, "item_id"]
SERVING_KEY = [*ROW_KEY, LOG_TIMESTAMP]
SCORE_SCHEMA = pa.schema(
    [
        (REQUEST_ID, pa.string()),
        (LOG_TIMESTAMP, pa.timestamp("us", tz="UTC")),
        (SERVED_AT, pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("position", pa.int32()),
        ("p_click", pa.float64()),
        ("rank", pa.int32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_kind", pa.string()),
        ("arm", pa.string()),
    ]
)


def served_log_dir(paths: StatePaths, service: str) -> Path:
    """Feast's FileLoggingDestination folder of ``service``: ``<state>/logs/<service>/features``."""
    return paths.logs / service / "features"


def score_log_dir(paths: StatePaths, service: str) -> Path:
    return paths.logs / service / "scores"


@dataclass
class LogBatch:
    """One request's rows: feature-log columns and score columns (equal row counts)."""

    features: dict[str, list[Any]]
    scores: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.scores[REQUEST_ID])


Sink = Callable[[pa.Table, pa.Table], None]


def bind_logging_destination(service: FeatureService, folder: Path) -> FeatureService:
    """Point ``service``'s logging destination at ``folder`` (in memory; created on disk).

    The registered config names the folder of the state dir it was applied from; a service
    reading another state dir (tests, a copied registry) still writes its own log.
    """
    from feast.feature_logging import LoggingConfig
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    folder.mkdir(parents=True, exist_ok=True)
    current = service.logging_config
    path = getattr(getattr(current, "destination", None), "path", None)
    if path is None or Path(path).resolve() != folder.resolve():
        if path is not None:
            log.info("served-feature log: %s instead of the registered %s", folder, path)
        service.logging_config = LoggingConfig(destination=FileLoggingDestination(path=str(folder)))
    return service


def log_sink(service: FeatureService, score_dir: Path) -> Sink:
    """Write the features into ``service``'s bound Feast logging destination and the scores
    beside them, each flush one parquet file per folder, written whole then renamed.

    The files are what Feast's ``write_logged_features`` writes for a file destination (the
    same table, in the schema Feast derives; its ``retrieve_feature_service_logs`` reads them
    back), written here rather than through it: for the DuckDB offline store Feast writes via
    ``ibis.memtable(table).to_parquet(...)``, and ibis registers each memtable as a view of
    its default DuckDB connection that it drops only at exit, so a service's memory grew with
    every row it logged (bench/bench_log_memory.py). Written whole then renamed, a reader never
    meets a half-written file of ours.
    """
    destination = service.logging_config.destination
    if getattr(destination, "partition_by", None):
        raise ValueError(
            f"feature service {service.name}: its logging destination is partitioned by "
            f"{destination.partition_by}; the scoring service writes one unpartitioned file per "
            "flush (FileLoggingDestination(path=...) without partition_by)"
        )
    feature_dir = Path(destination.path)

    def write(features: pa.Table, scores: pa.Table) -> None:
        # Made on every write, not once: a clean-up job or an operator may remove the folders
        # while the service runs; every flush until a restart would fail and drop its rows.
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex}.parquet"
        for folder, table in ((feature_dir, features), (score_dir, scores)):
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f".{name}.tmp")
            (folder / f".{name}.tmp").rename(folder / name)

    return write


def log_schema(store: FeatureStore, service: FeatureService) -> pa.Schema:
    """The schema Feast derives for ``service``'s logs (join keys, features, system columns)."""
    from feast.feature_logging import FeatureServiceLoggingSource

    return FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)


class ServedLogWriter:
    """Bounded buffer + background flusher; see the module docstring."""

    def __init__(
        self,
        schema: pa.Schema,
        sink: Sink,
        *,
        buffer_rows: int,
        flush_rows: int,
        flush_seconds: float,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.schema = schema
        self.sink = sink
        self.buffer_rows = buffer_rows
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.metrics = metrics
        self._pending: list[LogBatch] = []
        self._pending_rows = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0

    # --------------------------------------------------------------- the request side
    def submit(self, batch: LogBatch) -> bool:
        """Queue one request's rows; False (and counted) if the buffer is full. Never blocks
        on I/O: the lock only guards a list append."""
        n = len(batch)
        with self._cond:
            if self._pending_rows + n > self.buffer_rows:
                self.dropped += n
                if self.metrics is not None:
                    self.metrics.log_rows.labels("dropped").inc(n)
                return False
            self._pending.append(batch)
            self._pending_rows += n
            if self.metrics is not None:
                self.metrics.log_buffer.set(self._pending_rows)
            if self._pending_rows >= self.flush_rows:
                self._cond.notify()
        return True

    # ---------------------------------------------------------------- the writer side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rankflow-log-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the thread after a last flush of everything waiting."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        else:
            self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and self._pending_rows < self.flush_rows:
                    self._cond.wait(self.flush_seconds)
                stopping = self._stop
            self.flush()
            if stopping:
                return

    def _take(self) -> list[LogBatch]:
        with self._cond:
            batches, self._pending, self._pending_rows = self._pending, [], 0
            if self.metrics is not None:
                self.metrics.log_buffer.set(0)
        return batches

    def flush(self) -> int:
        """Write everything waiting now; the rows written (0 on a failed write, counted)."""
        batches = self._take()
        if not batches:
            return 0
        n = sum(len(b) for b in batches)
        try:
            features = _table(self.schema, [b.features for b in batches])
            scores = _table(SCORE_SCHEMA, [b.scores for b in batches])
            self.sink(features, scores)
        except Exception as error:  # a full or failing disk: count, keep serving
            self.failed_batches += 1
            self.dropped += n
            if self.metrics is not None:
                self.metrics.log_flush_errors.inc()
                self.metrics.log_rows.labels("dropped").inc(n)
            log.warning("served-feature log: dropped %d rows: %s", n, error)
            return 0
        self.written += n
        if self.metrics is not None:
            self.metrics.log_rows.labels("written").inc(n)
        return n


def _table(schema: pa.Schema, parts: list[dict[str, list[Any]]]) -> pa.Table:
    columns = {}
    for column in schema:
        values: list[Any] = []
        for part in parts:
            values.extend(part[column.name])
        columns[column.name] = pa.array(values, type=column.type)
    return pa.table(columns, schema=schema)


@dataclass
class ServedLog:
    """The served rows (features joined with their scores, oldest first; empty if none) and
    what reading them left out, for the gap check's output."""

    frame: pd.DataFrame
    unreadable: list[UnreadableFile] = field(default_factory=list)
    # rows that repeat a (request id, item) already logged: client retries, kept once
    duplicate_rows: int = 0
    duplicate_requests: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    # rows skipped for a time pandas (and Feast's point-in-time join) cannot hold
    out_of_range: list[OutOfRange] = field(default_factory=list)

    @property
    def skipped_rows(self) -> int:
        return sum(skip.rows for skip in self.out_of_range)

    def notes(self) -> list[str]:
        """One line per kind of row or file left out; none for a clean log."""
        notes = [skip.line() for skip in self.out_of_range]
        if self.duplicate_rows:
            notes.append(
                f"{self.duplicate_rows} rows repeat a ({REQUEST_ID}, item_id) already logged, "
                f"from {self.duplicate_requests} request id(s) reused by client retries (e.g. "
                f"{', '.join(self.duplicate_examples)}): the first logged of each is kept"
            )
        if self.unreadable:
            notes.append(
                f"{len(self.unreadable)} unreadable log file(s) skipped (half written while "
                "read, or not parquet), the other files were read: "
                + "; ".join(u.line() for u in self.unreadable)
            )
        return notes

    def to_dict(self) -> dict[str, Any]:
        return {
            "duplicate_rows": self.duplicate_rows,
            "duplicate_requests": self.duplicate_requests,
            "out_of_range": [
                {"column": o.column, "rows": o.rows, "request_ids": o.examples, "value": o.value}
                for o in self.out_of_range
            ],
            "unreadable_files": [{"path": str(u.path), "error": u.error} for u in self.unreadable],
        }


def read_served_log(paths: StatePaths, service: str) -> pd.DataFrame:
    """The served rows of :func:`load_served_log`, for callers that need only them."""
    return load_served_log(paths, service).frame


def load_served_log(paths: StatePaths, service: str) -> ServedLog:
    """The served rows, features joined with their scores, oldest first.

    Reads the parquet files of the destination folder directly (what Feast's
    ``retrieve_feature_service_logs`` reads, without needing a time window); drops
    ``__log_date`` as that does. Files that do not read (Feast writes them in place) are
    skipped and named.
    """
    import pandas as pd

    feature_tables, unreadable = read_tables(parquet_files(served_log_dir(paths, service)))
    score_tables, unreadable_scores = read_tables(parquet_files(score_log_dir(paths, service)))
    unreadable += unreadable_scores
    if not feature_tables or not score_tables:
        return ServedLog(pd.DataFrame(), unreadable)
    features = pa.concat_tables(feature_tables, promote_options="default")
    features = features.drop_columns([c for c in (LOG_DATE,) if c in features.column_names])
    # promote: score files written before __served_at existed lack that column
    scores = pa.concat_tables(score_tables, promote_options="default").to_pandas()
    rows, out_of_range = drop_out_of_range(features.to_pandas(), REQUEST_ID)
    repeated = rows.duplicated(ROW_KEY)
    requests = rows.loc[repeated, REQUEST_ID].drop_duplicates()
    return ServedLog(
        _first_logged(rows, scores),
        unreadable,
        duplicate_rows=int(repeated.sum()),
        duplicate_requests=len(requests),
        duplicate_examples=[str(r) for r in requests.head(EXAMPLES)],
        out_of_range=out_of_range,
    )


def _first_logged(features: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Each (request id, item) once: of its servings, the one scored first.

    A client retry that reuses a request id logs its items again, at the request's explicit
    time (the same ``__log_timestamp``) or at a time of its own. The feature and score rows of
    one serving pair up by (request id, item, log time); only the score log has the wall-clock
    ``__served_at`` that orders the servings. Two servings at one explicit time cannot be told
    apart in Feast's feature log (no wall-clock column): the first file's row is kept.
    """
    import pandas as pd

    if SERVED_AT not in scores.columns:  # every score file predates __served_at
        scores = scores.assign(**{SERVED_AT: pd.NaT})
    scores = scores.drop(columns=["user_id", "position"], errors="ignore")
    frame = features.drop_duplicates(SERVING_KEY).merge(
        _scored_first(scores).drop_duplicates(SERVING_KEY),
        on=SERVING_KEY,
        how="inner",
        validate="one_to_one",
    )
    frame = _scored_first(frame).drop_duplicates(ROW_KEY).drop(columns=[SERVED_AT])
    return frame.sort_values([LOG_TIMESTAMP, REQUEST_ID, "rank"]).reset_index(drop=True)


def _scored_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order they were scored. A row without ``__served_at`` comes from a score
    file that predates the column, so it was logged before any row that has one."""
    return frame.sort_values([SERVED_AT, LOG_TIMESTAMP], na_position="first", kind="stable")
