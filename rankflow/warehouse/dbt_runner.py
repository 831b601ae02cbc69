"""Running dbt in-process and describing what failed, for the warehouse build and docs.

dbt runs through ``dbt.cli.main.dbtRunner``. Its line per node goes only to its full log
(``<state>/dbt/logs/dbt.log``) and the build reports :func:`summary_line` instead, unless
``rankflow --verbose`` asks for dbt's own output (in colour only on a terminal); dbt's errors
always print. The paths it needs reach ``dbt_project/profiles.yml``
and the export models as dbt vars (``warehouse_path``, ``exports_dir``), never through the
process environment; by hand, the dbt CLI can set the same through ``RANKFLOW_WAREHOUSE_PATH`` /
``RANKFLOW_EXPORTS_DIR``, which the project falls back to.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rankflow.console import colours_wanted, is_verbose
from rankflow.paths import REPO_ROOT, StatePaths

if TYPE_CHECKING:  # dbt is imported lazily: it is slow to import and only needed to build
    from dbt.cli.main import dbtRunnerResult

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

# dbt node statuses that make a build fail ("warn" does not)
_FAILED_STATUSES = {"error", "fail", "runtime error"}
# dbt resource types counted as tests in the summary line (the rest are models, seeds, ...)
_TEST_TYPES = {"test", "unit_test"}


@dataclass(frozen=True)
class NodeFailure:
    """One dbt node that failed, in words a user can act on."""

    unique_id: str
    resource_type: str
    status: str
    message: str
    model: str | None = None  # for data tests: the model (or source) the test is attached to
    column: str | None = None  # for column tests: the column
    compiled_path: str | None = None

    def describe(self) -> str:
        where = ""
        if self.model and self.column:
            where = f" on column {self.column!r} of {self.model}"
        elif self.model:
            where = f" on {self.model}"
        text = f"{self.resource_type} {self.unique_id}{where}: {self.status}: {self.message}"
        if self.compiled_path:
            text += f" (compiled SQL: {self.compiled_path})"
        return text


# --- dbt invocation -----------------------------------------------------------------------------


def dbt_path_vars(warehouse: Path, exports_dir: Path) -> dict[str, str]:
    """The dbt vars profiles.yml and the export models read for their paths."""
    return {"warehouse_path": str(warehouse), "exports_dir": str(exports_dir)}


def dbt_log_file(paths: StatePaths) -> Path:
    """dbt's full log (every node, its SQL, timings) of the builds in this state dir."""
    return paths.dbt.resolve() / "logs" / "dbt.log"


def dbt_common_args(paths: StatePaths, target_name: str) -> list[str]:
    # target/ and logs/ under the state dir, not dbt_project/: the checkout stays clean and two
    # state dirs (tests, engineers) never share partial-parse files or manifests.
    # absolute: dbt resolves a relative target path against the project folder
    dbt_home = paths.dbt.resolve()
    return [
        *dbt_output_args(),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(dbt_home / target_name),
        "--log-path",
        str(dbt_home / "logs"),
        # no network: dbt's anonymous usage tracking would try to reach the internet
        "--no-send-anonymous-usage-stats",
    ]


def dbt_output_args() -> list[str]:
    """dbt's console output: errors only unless verbose; colour only on a terminal.

    The file log keeps everything at debug level either way, without colour codes (it is read
    with a pager or grep, not a terminal).
    """
    colours = "--use-colors" if colours_wanted() else "--no-use-colors"
    args = [colours, "--no-use-colors-file"]
    return args if is_verbose() else [*args, "--quiet"]


def summary_line(command: str, run: dbtRunnerResult, log_file: Path) -> str:
    """One line for a dbt invocation: models and tests by outcome, the time, the full log."""
    results = getattr(getattr(run, "result", None), "results", None) or []
    models: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    for result in results:
        kind = str(getattr(result.node, "resource_type", ""))
        status = str(result.status)
        outcome = "error" if status in _FAILED_STATUSES else status
        outcome = {"success": "ok", "pass": "ok"}.get(outcome, outcome)
        (tests if kind in _TEST_TYPES else models)[outcome] += 1
    elapsed = getattr(getattr(run, "result", None), "elapsed_time", None)
    parts = [
        _counted(models, "models", ("ok", "error")),
        _counted(tests, "tests", ("ok", "warn", "error")),
    ]
    if elapsed is not None:
        parts.append(f"{elapsed:.1f} s")
    return f"dbt {command}: " + "; ".join(parts) + f"; full log {log_file}"


def _counted(outcomes: Counter[str], noun: str, always: tuple[str, ...]) -> str:
    """``17 models ok, 0 error``: the outcomes in ``always`` even at 0, then any others."""
    shown = [*always, *sorted(set(outcomes) - set(always))]
    first, *rest = shown
    return ", ".join([f"{outcomes[first]} {noun} {first}", *(f"{outcomes[o]} {o}" for o in rest)])


def invoke_dbt(args: list[str]) -> dbtRunnerResult:
    from dbt.cli.main import dbtRunner

    try:
        return dbtRunner().invoke(args)
    finally:
        _close_dbt_duckdb()


def _close_dbt_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps in a class attribute across invocations.

    dbt-duckdb does not close it when an invocation ends. Left open, the process keeps a handle
    on a file that is about to be renamed or deleted, and our own ``duckdb.connect`` to it fails
    ("Can't open a connection to same database file with a different configuration").
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
            DuckDBConnectionManager._ENV = None


def failures(run: dbtRunnerResult) -> list[NodeFailure]:
    """The failed nodes of a dbt run, with the model and column a data test is attached to."""
    results = getattr(getattr(run, "result", None), "results", None) or []
    found = []
    for result in results:
        if str(result.status) not in _FAILED_STATUSES:
            continue
        node = result.node
        model = column = None
        if getattr(node, "attached_node", None):
            model = node.attached_node.split(".")[-1]
        column = getattr(node, "column_name", None) or None
        if getattr(node, "resource_type", None) == "unit_test":
            model = getattr(node, "model", None)
        found.append(
            NodeFailure(
                unique_id=node.unique_id,
                resource_type=str(node.resource_type),
                status=str(result.status),
                message=(result.message or "").strip(),
                model=model,
                column=column,
                compiled_path=getattr(node, "compiled_path", None),
            )
        )
    return found


def invocation_id() -> str:
    """The id of the dbt invocation that just ran: the ``_load_id`` of the rows it wrote."""
    from dbt_common.invocation import get_invocation_id

    return get_invocation_id()
