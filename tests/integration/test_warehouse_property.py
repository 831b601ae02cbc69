"""The warehouse invariant as a property: after any sequence of raw changes (hypothesis, on
tiny data), the incremental warehouse and its exports equal a ``--full-refresh`` build of the
same raw data, checked after every step. The helpers and the known cases one by one are in
tests/integration/test_warehouse_invariant.py.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankflow.data.contract import ContractError
from rankflow.paths import StatePaths
from rankflow.warehouse import changes
from tests.integration.test_warehouse_invariant import (
    START,
    _start_state,
    assert_equals_full_build,
    at,
    build,
    day_rows,
    put_day,
    tables_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


OPS = st.sampled_from(
    [
        "add_day",
        "rewrite_day",
        "shrink_day",
        "remove_day",
        "future_rows",
        "broken_then_fixed",
        "resimulate",
        "advance_clock",
        "skipped_files",
    ]
)


# Three sequences of two to four steps, each step two dbt builds (incremental and full): the
# known cases are tested one by one beside this; here, their combinations.
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,  # the same sequences every run: a failure is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(st.tuples(OPS, st.integers(0, 9)), min_size=2, max_size=4))
def test_any_sequence_of_raw_changes_equals_a_full_build(
    ops: list[tuple[str, int]],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Trust the stat keys at once (production waits RACY_SECONDS after a write), so these
    # sequences exercise the fingerprint cache: only files the steps rewrote are hashed again.
    monkeypatch.setattr(changes, "RACY_SECONDS", 0.0)
    days = [START + timedelta(days=k) for k in range(3)]
    clock = at(days[-1], 20)
    paths = StatePaths(_start_state(tmp_path_factory, days, clock, shared=1))
    full = tmp_path_factory.getbasetemp() / "property-full-build"  # the same for every example
    for step, (op, arg) in enumerate(ops):
        days, clock = apply_op(paths, op, arg, days, clock, step)
        build(paths, clock)
        assert_equals_full_build(paths, clock, full)


def apply_op(
    paths: StatePaths, op: str, arg: int, days: list[date], clock: datetime, step: int
) -> tuple[list[date], datetime]:
    """Change the raw folder (or the clock) by one operation; return the days and the clock."""
    raw = paths.raw
    pick = days[arg % len(days)] if days else None
    if op == "add_day" or (pick is None and op != "advance_clock"):
        day = (days[-1] if days else START) + timedelta(days=1)
        put_day(raw, day, day_rows(day, step, shared=arg % 3))
        return [*days, day], max(clock, at(day, 21))
    if op == "remove_day" and len(days) > 1:  # the contract needs at least one day
        shutil.rmtree(raw / "impressions" / f"event_date={pick}")
        return [d for d in days if d != pick], clock
    if op in ("rewrite_day", "remove_day"):
        put_day(raw, pick, day_rows(pick, 100 + step, n=4 + arg % 5, shared=arg % 2))
    elif op == "shrink_day":
        put_day(raw, pick, day_rows(pick, 0, n=6, shared=1).head(1 + arg % 3))
    elif op == "future_rows":
        future = clock.date() + timedelta(days=1 + arg % 3)
        put_day(raw, future, day_rows(future, step), name=f"future-{step}.parquet")
        return sorted({*days, future}), clock
    elif op == "broken_then_fixed":
        broken = day_rows(pick, 200 + step).drop(columns=["device"])
        put_day(raw, pick, broken)
        before = tables_of(paths)
        with pytest.raises(ContractError, match="column 'device' is missing"):
            build(paths, clock)
        after = tables_of(paths)
        assert all(before[k].equals(after[k]) for k in before), "a failed build changed state"
        put_day(raw, pick, day_rows(pick, 300 + step))
    elif op == "resimulate":  # a whole new dataset over a window one day later
        shutil.rmtree(raw / "impressions")
        days = [d + timedelta(days=1) for d in days]
        for day in days:
            put_day(raw, day, day_rows(day, 400 + step, shared=1))
        return days, max(clock, at(days[-1], 20))
    elif op == "advance_clock":
        return days, clock + timedelta(hours=6 + 6 * (arg % 4))
    elif op == "skipped_files":
        folder = raw / "impressions" / f"event_date={pick}"
        day_rows(pick, 500).to_parquet(folder / "_x.parquet")
        day_rows(pick, 501).to_parquet(folder / ".x.parquet")
        (folder / "extra.csv").write_text("event_id\nnope\n")
    return days, clock
