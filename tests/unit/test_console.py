"""What a command prints of the tools it drives (rankflow.console, rankflow.features.output)."""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankflow import console
from rankflow.features.output import known_warnings_dropped


@pytest.fixture
def verbose_off() -> Iterator[None]:
    """Each test starts quiet and leaves the process switch as it found it."""
    before = console.is_verbose()
    console.set_verbose(False)
    yield
    console.set_verbose(before)


def _tool_prints() -> None:
    print("Created sqlite table rankflow_user_daily_stats")
    print("\x1b[1m\x1b[32mitem_attributes\x1b[0m:", file=sys.stderr)


def test_a_tools_output_goes_to_its_log_file_not_the_console(
    verbose_off: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "logs" / "tool.log"
    with console.tool_output(log_file, "feast apply") as written:
        _tool_prints()
    with console.tool_output(log_file, "feast materialize"):
        print("second run")
    assert written == log_file
    assert capsys.readouterr() == ("", "")
    text = log_file.read_text()
    # both runs, in order, each under a header naming it
    assert text.index("--- feast apply at ") < text.index("Created sqlite table")
    assert text.index("item_attributes") < text.index("--- feast materialize at ")
    assert text.rstrip().endswith("second run")
    assert "\x1b" not in text  # Feast's colour codes are not kept in a file


def test_verbose_prints_the_tools_output_and_writes_no_log(
    verbose_off: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console.set_verbose(True)
    log_file = tmp_path / "tool.log"
    with console.tool_output(log_file, "feast apply") as written:
        _tool_prints()
    assert written is None
    out, err = capsys.readouterr()
    assert "Created sqlite table" in out and "item_attributes" in err
    assert "\x1b" not in err  # not a terminal: no colour codes
    assert not log_file.exists()


def test_colours_only_on_a_terminal() -> None:
    assert console.colours_wanted(io.StringIO()) is False

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert console.colours_wanted(Terminal()) is True


def test_the_known_library_warnings_are_dropped_and_no_others() -> None:
    """The real ibis call Feast's offline store makes, and Feast's own apply warning's text;
    a different warning from the same module, or the same text from another module, shows."""
    import ibis

    backend = ibis.duckdb.connect()
    backend.raw_sql("CREATE TABLE t AS SELECT 1 AS a")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        backend.table("t")  # ibis reads the schema through duckdb's deprecated call
        assert any("fetch_arrow_table" in str(w.message) for w in shown)  # it still warns
        shown.clear()
        with known_warnings_dropped():
            backend.table("t")
            warnings.warn_explicit(
                "On demand feature view is an experimental feature. This API is stable",
                RuntimeWarning,
                "feature_store.py",
                1,
                module="feast.feature_store",
            )
            warnings.warn_explicit(
                "something else", DeprecationWarning, "x.py", 1, module="ibis.backends.duckdb"
            )
            warnings.warn_explicit(
                "On demand feature view is an experimental feature.",
                RuntimeWarning,
                "mine.py",
                1,
                module="rankflow.mine",
            )
    backend.disconnect()
    assert sorted(str(w.message) for w in shown) == [
        "On demand feature view is an experimental feature.",
        "something else",
    ]
