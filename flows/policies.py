"""What the flows' tasks retry and cache, and on which keys.

Retries: only failures that can go away by themselves - a dropped connection, a timeout, a
SQLite / DuckDB file briefly locked by another process, a server answering "try again". The
library's own errors (bad config, a contract violation, a failed dbt build or dbt test, a Feast
definition or export problem, a training-set window that does not fit, a gate) are never
retried: running the same code on the same input again gives the same answer.

Caching: keys are built from the config and from fingerprints of the files a task reads
(path, size, mtime of every file), never from data frames, whose hashes are unstable. A task
that *writes* files (the simulator) is only served from the cache while those files are still
the ones its last run left behind: :func:`outputs_intact` compares them with a record written
after the run, and the flow refreshes the cache entry when they differ.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.paths import StatePaths

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import State, TaskRun
    from prefect.context import TaskRunContext

    from rankflow.config import RankflowConfig

# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------

TRANSIENT_RETRIES = 2
TRANSIENT_RETRY_DELAYS = [2, 10]  # seconds before the first and the second retry

# Messages of lock / availability errors from SQLite (Feast online store, MLflow backend),
# SQLAlchemy and DuckDB that clear once the other process lets go.
_TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "could not set lock on file",
    "conflicting lock",
    "temporarily unavailable",
    "connection reset",
    "connection refused",
    "connection aborted",
    "timed out",
)
_TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
# Client libraries whose connection / timeout exceptions do not derive from the builtins.
_CLIENT_MODULES = ("requests", "urllib3", "httpx", "httpcore", "redis", "grpc", "aiohttp")


def _permanent_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from rankflow.errors import RankflowError

    return (
        RankflowError,  # config, contract, dbt build or test, Feast, training set, gates, locks
        ValidationError,
        # OSErrors that describe the file system, not a hiccup
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _looks_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError | BlockingIOError | InterruptedError):
        return True
    kind = type(exc)
    message = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) or kind.__name__ in {
        "OperationalError",  # sqlalchemy.exc.OperationalError (MLflow's SQL backend)
        "IOException",  # duckdb.IOException: the file is locked by another process
        "BusyLoadingError",  # redis
    }:
        return kind.__name__ == "BusyLoadingError" or any(m in message for m in _TRANSIENT_MESSAGES)
    if kind.__module__.split(".")[0] in _CLIENT_MODULES:
        return "connection" in kind.__name__.lower() or "timeout" in kind.__name__.lower()
    if kind.__name__ == "MlflowException":
        return getattr(exc, "error_code", None) in _TRANSIENT_MLFLOW_CODES
    return False


def is_transient(exc: BaseException) -> bool:
    """True for a failure worth retrying as is: a connection, timeout or lock problem, found
    on the exception or anywhere in its cause / context chain.

    A library error (config, contract, dbt build or test, Feast, training set, pydantic) is
    never transient, whatever it wraps: the library chose to report it as a result.
    """
    if isinstance(exc, _permanent_types()):
        return False
    return any(_looks_transient(link) for link in _chain(exc))


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only if :func:`is_transient`."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


# --------------------------------------------------------------------------------------------
# Cache keys
# --------------------------------------------------------------------------------------------

CACHE_EXPIRATION = timedelta(days=7)


def tree_fingerprint(*roots: Path) -> str:
    """A digest of every file under ``roots``: relative path, size and modification time.

    Cheap (no file is read) and changes whenever a file is added, removed or rewritten. A
    missing root is part of the digest too.
    """
    digest = hashlib.sha256()
    for root in map(Path, roots):
        digest.update(f"{root.resolve()}\0".encode())
        if not root.exists():
            digest.update(b"<missing>\n")
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            stat = file.stat()
            relative = file.relative_to(root) if file != root else Path(file.name)
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _source_digest(module: Any) -> str:
    """The code that produced a cached result is part of its key: change it, recompute."""
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:16]


def _key(name: str, payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return f"rankflow-{name}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def simulate_key(config: RankflowConfig, paths: StatePaths) -> str:
    """The simulator's inputs: its config (with "today" resolved), the output folders, its code."""
    from rankflow.sim import clicks, population, simulate
    from rankflow.sim import config as sim_config

    simulation = config.simulation.model_dump(mode="json")
    simulation["end_date"] = config.simulation.resolved_end_date().isoformat()
    return _key(
        "simulate",
        {
            "simulation": simulation,
            "raw_dir": config.resolved_raw_dir(paths),
            "truth_dir": paths.truth,
            # The simulator is four modules since issue #11; a change to any of them recomputes.
            "code": [_source_digest(m) for m in (simulate, population, clicks, sim_config)],
        },
    )


def contract_key(config: RankflowConfig, paths: StatePaths) -> str:
    """The contract check's inputs: the raw files (fingerprinted) and the checker's code (its
    rules, its type rules and the file listing it shares with the build)."""
    from rankflow.data import contract, contract_types, raw_files

    raw_dir = config.resolved_raw_dir(paths)
    code = "".join(_source_digest(m) for m in (contract, contract_types, raw_files))
    return _key("contract", {"raw_dir": raw_dir, "raw": tree_fingerprint(raw_dir), "code": code})


def simulate_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return simulate_key(parameters["config"], parameters["paths"])


def contract_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return contract_key(parameters["config"], parameters["paths"])


# --------------------------------------------------------------------------------------------
# Outputs of cached tasks that write files
# --------------------------------------------------------------------------------------------


def _record_path(paths: StatePaths, name: str) -> Path:
    return paths.prefect / "outputs" / f"{name}.json"


def record_outputs(paths: StatePaths, name: str, key: str, *roots: Path) -> None:
    """Remember which cache key produced the files now under ``roots``."""
    record = _record_path(paths, name)
    record.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "fingerprint": tree_fingerprint(*roots)}
    scratch = record.with_suffix(".tmp")
    scratch.write_text(json.dumps(payload))
    scratch.replace(record)


def outputs_intact(paths: StatePaths, name: str, key: str, *roots: Path) -> bool:
    """True if the files under ``roots`` are still those the run with ``key`` left behind.

    False after another config's run, a manual edit or deletion, or when nothing was
    recorded: the flow then refreshes the cached result instead of trusting it.
    """
    record = _record_path(paths, name)
    try:
        payload = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return payload.get("key") == key and payload.get("fingerprint") == tree_fingerprint(*roots)
