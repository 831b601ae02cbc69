"""The served log's sink keeps the service's memory flat and its files whole.

Feast's ``write_logged_features`` (DuckDB offline store) kept every flushed table registered in
ibis's default DuckDB connection until the process exited: the service's memory grew by about
the table's size every flush (bench/bench_log_memory.py measures both paths)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination

from rankflow.serving.served_log import log_sink


def _rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _service(folder: Path, **destination: object) -> FeatureService:
    config = LoggingConfig(destination=FileLoggingDestination(path=str(folder), **destination))
    return FeatureService(name="ctr_ranker_v1", features=[], logging_config=config)


def test_a_hundred_large_flushes_leave_memory_where_it_was(tmp_path: Path) -> None:
    """Each flush a new table, as the service's: Feast's path held them all (60 MB here)."""
    rng = np.random.default_rng(0)

    def flush() -> pa.Table:
        table = pa.table({f"view__f{i}": rng.random(1000) for i in range(60)})  # ~0.5 MB
        sink(table, table.select([0]))
        return table

    sink = log_sink(_service(tmp_path / "features"), tmp_path / "scores")
    for _ in range(10):  # first-use allocations
        flush()
    before = _rss_mb()
    for _ in range(100):
        last = flush()
    grown = _rss_mb() - before
    assert grown < 15, f"resident memory grew {grown:.1f} MB over 100 flushes"
    files = sorted((tmp_path / "features").glob("*.parquet"))
    assert len(files) == 110 and not list((tmp_path / "features").glob(".*"))  # no leftovers
    assert any(pq.read_table(file).equals(last) for file in files)


def test_the_folders_are_made_again_and_a_partitioned_destination_is_refused(
    tmp_path: Path,
) -> None:
    table = pa.table({"x": [1, 2]})
    sink = log_sink(_service(tmp_path / "features"), tmp_path / "scores")
    sink(table, table)
    for folder in ("features", "scores"):
        for file in (tmp_path / folder).iterdir():
            file.unlink()
        (tmp_path / folder).rmdir()  # removed while the service runs
    sink(table, table)
    assert len(list((tmp_path / "scores").glob("*.parquet"))) == 1
    with pytest.raises(ValueError, match="partitioned by"):
        log_sink(_service(tmp_path / "p", partition_by=["x"]), tmp_path / "s")
