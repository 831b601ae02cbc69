"""The served-log writer never blocks or fails a request: a bounded buffer, a background
flusher, dropped rows counted when the sink is slow, full or failing."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from rankflow.serving.metrics import ServiceMetrics
from rankflow.serving.served_log import (
    LOG_TIMESTAMP,
    REQUEST_ID,
    SCORE_SCHEMA,
    SERVED_AT,
    LogBatch,
    ServedLogWriter,
)

FEATURES = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), (REQUEST_ID, pa.string())])


def _batch(request: str, n: int) -> LogBatch:
    from datetime import UTC, datetime

    when = datetime(2026, 3, 11, tzinfo=UTC)
    features = {"user_id": [1] * n, "item_id": list(range(n)), REQUEST_ID: [request] * n}
    scores = {
        REQUEST_ID: [request] * n,
        LOG_TIMESTAMP: [when] * n,
        SERVED_AT: [when] * n,
        "user_id": [1] * n,
        "item_id": list(range(n)),
        "position": [1] * n,
        "p_click": [0.1] * n,
        "rank": list(range(1, n + 1)),
        "model_name": ["m"] * n,
        "model_version": ["1"] * n,
        "model_kind": ["dcn"] * n,
        "arm": ["champion"] * n,
    }
    return LogBatch(features, scores)


def _metric(metrics: ServiceMetrics, outcome: str) -> float:
    return metrics.log_rows.labels(outcome)._value.get()


def test_rows_from_many_threads_are_all_written_once() -> None:
    written: list[tuple[pa.Table, pa.Table]] = []
    metrics = ServiceMetrics()
    writer = ServedLogWriter(
        FEATURES,
        lambda f, s: written.append((f, s)),
        buffer_rows=100_000,
        flush_rows=50,
        flush_seconds=0.05,
        metrics=metrics,
    )
    writer.start()

    def send(k: int) -> None:
        for i in range(50):
            assert writer.submit(_batch(f"r{k}-{i}", 3))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    features = pa.concat_tables([f for f, _ in written])
    scores = pa.concat_tables([s for _, s in written])
    assert features.num_rows == scores.num_rows == 8 * 50 * 3
    assert len(set(features[REQUEST_ID].to_pylist())) == 400
    assert scores.schema == SCORE_SCHEMA
    assert writer.dropped == 0 and _metric(metrics, "written") == 1200


def test_a_slow_sink_drops_rows_instead_of_blocking_requests() -> None:
    release = threading.Event()
    metrics = ServiceMetrics()
    writer = ServedLogWriter(
        FEATURES,
        lambda f, s: release.wait(30),
        buffer_rows=20,
        flush_rows=5,
        flush_seconds=0.01,
        metrics=metrics,
    )
    writer.start()
    assert writer.submit(_batch("first", 5))
    deadline = time.monotonic() + 10
    while writer._pending_rows and time.monotonic() < deadline:  # the writer took it and hangs
        time.sleep(0.01)
    accepted = [writer.submit(_batch(f"r{i}", 5)) for i in range(10)]
    assert accepted == [True] * 4 + [False] * 6  # 20 rows fit; the rest are dropped at once
    assert writer.dropped == 30 and _metric(metrics, "dropped") == 30
    release.set()
    writer.close()
    assert writer.written == 25


def test_a_failing_sink_counts_the_batch_and_keeps_going() -> None:
    calls = []

    def sink(features: pa.Table, scores: pa.Table) -> None:
        calls.append(features.num_rows)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")

    metrics = ServiceMetrics()
    writer = ServedLogWriter(
        FEATURES, sink, buffer_rows=100, flush_rows=1000, flush_seconds=60, metrics=metrics
    )
    writer.submit(_batch("a", 4))
    assert writer.flush() == 0  # the disk is full: dropped and counted, no exception
    writer.submit(_batch("b", 2))
    assert writer.flush() == 2
    assert writer.dropped == 4 and writer.failed_batches == 1
    assert metrics.log_flush_errors._value.get() == 1


def test_score_files_from_before_served_at_still_read(tmp_path) -> None:
    """A state upgraded in place keeps score files without ``__served_at``: the reader
    promotes the schemas instead of failing the gap check."""
    import pyarrow.parquet as pq

    from rankflow.paths import StatePaths
    from rankflow.serving.served_log import read_served_log, score_log_dir, served_log_dir

    paths, service = StatePaths(tmp_path), "ctr_ranker_v1"
    features, scores = served_log_dir(paths, service), score_log_dir(paths, service)
    features.mkdir(parents=True)
    scores.mkdir(parents=True)
    for name in ("old", "new"):
        batch = _batch(name, 2)
        logged = {**batch.features, LOG_TIMESTAMP: batch.scores[LOG_TIMESTAMP]}
        pq.write_table(pa.table(logged), features / f"{name}.parquet")
        table = pa.table({k: batch.scores[k] for k in SCORE_SCHEMA.names}, schema=SCORE_SCHEMA)
        if name == "old":
            table = table.drop_columns([SERVED_AT])
        pq.write_table(table, scores / f"{name}.parquet")
    frame = read_served_log(paths, service)
    assert sorted(frame[REQUEST_ID]) == ["new", "new", "old", "old"]
