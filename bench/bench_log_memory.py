"""The served-feature log's memory: Feast's ``write_logged_features`` path against the service's.

    .state/venv/bin/python bench/bench_log_memory.py [--flushes 3000] [--rows 100]

Each path runs in a process of its own, writing ``--flushes`` tables of ``--rows`` served rows of
60 float features (a new table each flush, as the service builds one from the rows it buffered)
into a temporary logging destination, and reports its resident memory (``VmRSS``) after each third:

- **feast**: ``feast.infra.offline_stores.ibis.write_logged_features_ibis``, what
  ``FeatureStore.write_logged_features`` runs for the DuckDB offline store
  (``ibis.memtable(table).to_parquet(...)`` on ibis's default DuckDB connection);
- **service**: :func:`rankflow.serving.served_log.log_sink`, what ``rankflow serve`` writes with.

Before any figure it checks that each path wrote one file per flush with every row (the
inputs are real). Prints the growth from the first third to the end per path and the ratio,
from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _tables(rows: int) -> Iterator[pa.Table]:
    """A new table each flush, as the service builds one from the rows it buffered."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    while True:
        yield pa.table({f"view__f{i}": rng.random(rows) for i in range(60)})


def worker(path: str, flushes: int, rows: int) -> dict:
    """One path in this process: RSS after each third of the flushes, files and rows written."""
    import pyarrow.dataset as ds

    tables = _tables(rows)
    with tempfile.TemporaryDirectory() as tmp:
        features, scores = Path(tmp) / "features", Path(tmp) / "scores"
        features.mkdir()
        if path == "feast":
            from feast.feature_logging import LoggingConfig
            from feast.infra.offline_stores.file_source import FileLoggingDestination
            from feast.infra.offline_stores.ibis import write_logged_features_ibis

            config = LoggingConfig(destination=FileLoggingDestination(path=str(features)))

            def write() -> None:
                write_logged_features_ibis(
                    config=None,
                    data=next(tables),
                    source=None,
                    logging_config=config,
                    registry=None,
                )
        else:
            from types import SimpleNamespace

            from rankflow.serving.served_log import log_sink

            service = SimpleNamespace(
                name="bench",
                logging_config=SimpleNamespace(
                    destination=SimpleNamespace(path=str(features), partition_by=None)
                ),
            )
            sink = log_sink(service, scores)  # type: ignore[arg-type]

            def write() -> None:
                table = next(tables)
                sink(table, table.select([0]))

        rss = [_rss_mb()]
        for k in range(1, flushes + 1):
            write()
            if k % max(1, flushes // 3) == 0:
                rss.append(_rss_mb())
        files = sorted(features.glob("*.parquet"))
        written = ds.dataset(files).count_rows() if files else 0
    return {"path": path, "rss_mb": rss, "files": len(files), "rows": written}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--worker", choices=["feast", "service"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.flushes, args.rows)))
        return 0
    sys.path.insert(0, str(ROOT))
    from rankflow.settings import Settings

    child_env = Settings.resolve().child_env  # the one reader of the process environment
    results = {}
    for path in ("feast", "service"):
        command = [sys.executable, __file__, "--worker", path]
        command += ["--flushes", str(args.flushes), "--rows", str(args.rows)]
        env = child_env({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        # The inputs are real: one file per flush, every row.
        assert result["files"] == args.flushes, result
        assert result["rows"] == args.flushes * args.rows, result
        results[path] = result
    print(f"{args.flushes} flushes of {args.rows} rows x 60 features, one process per path")
    print(f"{'path':<8} {'RSS after each third (MB)':<34} growth after the first third")
    growth = {}
    for path, result in results.items():
        rss = result["rss_mb"]
        growth[path] = rss[-1] - rss[1]
        shown = " -> ".join(f"{x:.0f}" for x in rss)
        print(f"{path:<8} {shown:<34} {growth[path]:+.1f} MB")
    per_flush = {p: 1024 * g / (args.flushes - args.flushes // 3) for p, g in growth.items()}
    print(
        f"per flush after the first third: feast {per_flush['feast']:.1f} KB, "
        f"service {per_flush['service']:.1f} KB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
