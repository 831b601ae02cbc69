"""``dbt docs generate`` for the live warehouse (``rankflow docs``, ``make docs``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rankflow.locks import exclusive
from rankflow.paths import StatePaths
from rankflow.warehouse.build import WarehouseError
from rankflow.warehouse.dbt_runner import dbt_common_args, dbt_path_vars, failures, invoke_dbt


def generate_docs(paths: StatePaths, *, raw_dir: Path | None = None) -> Path:
    """Run ``dbt docs generate`` for the live warehouse; return the folder with ``index.html``.

    The catalog is read from a throw-away copy of the live warehouse (dbt-duckdb always opens
    its database read-write, and the live file is only ever replaced, never written in place).
    Serve the result with ``dbt docs serve --target-path <returned folder>`` or open index.html.
    """
    live_db = paths.warehouse
    if not live_db.is_file():
        raise WarehouseError(
            f"no warehouse at {live_db}: build it first (rankflow build / build_warehouse)"
        )
    del raw_dir  # kept for callers; the docs read the warehouse copy, not raw files
    docs_dir = paths.dbt / "docs"
    live_db.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(live_db.parent / ".docs.lock", "dbt docs generate"):
        docs_scratch = live_db.parent / ".docs"
        shutil.rmtree(docs_scratch, ignore_errors=True)
        docs_scratch.mkdir()
        try:
            copy = (
                docs_scratch / live_db.name
            )  # same name: the catalog shows the live database name
            shutil.copy2(live_db, copy)
            path_vars = json.dumps(dbt_path_vars(copy, paths.exports))
            run = invoke_dbt(
                ["docs", "generate", *dbt_common_args(paths, "docs"), "--vars", path_vars]
            )
            if not run.success:
                detail = run.exception or "; ".join(f.describe() for f in failures(run))
                raise WarehouseError(f"dbt docs generate failed: {detail}")
        finally:
            shutil.rmtree(docs_scratch, ignore_errors=True)
    if not (docs_dir / "index.html").is_file():
        raise WarehouseError(f"dbt docs generate wrote no index.html into {docs_dir}")
    return docs_dir


# --- after a good build: inspect, swap -----------------------------------------------------
