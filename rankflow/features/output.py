"""What Feast prints while rankflow drives it: kept in a log file, and its known warnings dropped.

Feast has no quiet switch: ``apply`` prints a line per object and table it creates,
``materialize`` a coloured header and a progress bar per view. The stages report one line of
their own (:mod:`rankflow.features.summaries`), so Feast's output goes to
``<state>/feast/logs/feast.log`` unless ``rankflow --verbose`` (:mod:`rankflow.console`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from rankflow.console import tool_output
from rankflow.paths import StatePaths

__all__ = ["feast_log_file", "feast_output", "known_warnings_dropped"]


def feast_log_file(paths: StatePaths) -> Path:
    """Feast's own output (apply's created objects, materialize's progress) for this state."""
    return paths.feast / "logs" / "feast.log"


@contextlib.contextmanager
def known_warnings_dropped() -> Iterator[None]:
    """Drop the warnings Feast and its offline store raise on every run, none of them ours to fix.

    Each filter names the message and the module that raises it, so any other warning from
    the same libraries still shows.
    """
    with warnings.catch_warnings():
        # Feast warns on every apply of a repo with an on-demand feature view; the feature repo
        # uses one (request_features) on purpose and serves it online only, where the warning's
        # caveat (slow offline retrieval) does not apply.
        warnings.filterwarnings(
            "ignore",
            message="On demand feature view is an experimental feature",
            category=RuntimeWarning,
            module="feast.feature_store",
        )
        # Feast's DuckDB offline store reads through ibis, whose DuckDB backend still calls
        # duckdb's deprecated fetch_arrow_table(): ibis' to change, nothing a rankflow user or
        # this code can act on.
        warnings.filterwarnings(
            "ignore",
            message=r"fetch_arrow_table\(\) is deprecated",
            category=DeprecationWarning,
            module="ibis.backends.duckdb",
        )
        yield


@contextlib.contextmanager
def feast_output(paths: StatePaths, what: str) -> Iterator[Path | None]:
    """Feast's prints into :func:`feast_log_file` (yielded; None when verbose), its known
    warnings dropped."""
    with known_warnings_dropped(), tool_output(feast_log_file(paths), what) as log_file:
        yield log_file
