"""What a command prints of the tools it drives: one summary line per stage, full logs on disk.

dbt and Feast narrate every node, table and view they touch. A scheduled run's log keeps only
rankflow's own summary line for each stage, which names the tool's full log under the state
folder; ``rankflow --verbose`` (:func:`set_verbose`) prints the tools' own output as well, as
they write it. Colour codes go only to a terminal: a log file or a pipe gets plain text.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

__all__ = [
    "PlainText",
    "add_verbose_option",
    "colours_wanted",
    "is_verbose",
    "set_verbose",
    "tool_output",
]

# SGR colour / style sequences, which Feast writes whatever the stream (colorama constants)
_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# One switch per process, set by the CLI before any stage runs: the stages run in this process
# (Prefect runs a flow's tasks in threads of it), and none of them takes the CLI's arguments.
_verbose = False


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """The command line's ``--verbose``: the CLI hands its value to :func:`set_verbose`."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print dbt's and Feast's own output too (by default one summary line per stage; "
        "their full logs are kept in the state directory: dbt/logs/dbt.log, feast/logs/feast.log)",
    )


def set_verbose(on: bool) -> None:
    """Print the tools' own output (dbt's node lines, Feast's apply and materialize) too."""
    global _verbose
    _verbose = on


def is_verbose() -> bool:
    return _verbose


def colours_wanted(stream: TextIO | None = None) -> bool:
    """Colour codes only for a terminal: in a file or a pipe they are noise."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def tool_output(log_file: Path, what: str) -> Iterator[Path | None]:
    """Send what the calls inside print (stdout and stderr) to the end of ``log_file``.

    For tools with no quiet switch of their own (Feast prints with ``print``, ``click.echo`` and
    tqdm). Yields the log file, or None when verbose: then the output reaches the console as it
    always did. Each capture starts with a header naming ``what`` ran and when, so the file
    reads as a history of runs. Colour codes are dropped from the file, and from the console
    unless it is a terminal.
    """
    if _verbose:
        out = sys.stdout if colours_wanted(sys.stdout) else PlainText(sys.stdout)
        err = sys.stderr if colours_wanted(sys.stderr) else PlainText(sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield None
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as file:
        file.write(f"--- {what} at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
        sink = PlainText(file)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield log_file


class PlainText(io.TextIOBase):
    """A text stream that writes to ``target`` without colour codes."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._target.write(_ANSI_SEQUENCE.sub("", text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    # What code that writes to sys.stdout may ask of it (click reads the encoding; a library
    # that writes below Python, to the descriptor, bypasses the stripping, as it would any
    # redirection).
    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"

    def fileno(self) -> int:
        return self._target.fileno()
