"""The day-grain history's own logic, without dbt: which days are redone, what is carried over,
and the checks that keep a build from writing into a live file (rankflow.warehouse.history)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rankflow.warehouse import history
from rankflow.warehouse.dbt_runner import DBT_PROJECT_DIR
from rankflow.warehouse.history import HistoryError

D = date(2024, 3, 10)


def _feature_days_sql(reload: set[date], old: date | None, new: date | None, window: int) -> set:
    """The rule as dbt wrote it before the history moved out of the database (the SQL of
    ``changed_feature_days``), to check the Python version against."""
    con = duckdb.connect()
    con.execute("create table reload_days (day date)")
    for day in reload:
        con.execute("insert into reload_days values (?)", [day])
    rows = con.execute(
        f"""
        select distinct cast(day + cast(k as integer) as date) from reload_days
        cross join range(1, {window + 1}) as offsets(k)
        union
        select cast(unnest(generate_series(
            least(old_cutoff, new_cutoff) + 2, greatest(old_cutoff, new_cutoff) + 1,
            interval 1 day)) as date)
        from (select coalesce(?::date, ?::date) as old_cutoff, ?::date as new_cutoff)
        where old_cutoff is not null and new_cutoff is not null
        """,
        [old, new, new],
    ).fetchall()
    return {row[0] for row in rows}


@given(
    reload=st.sets(st.integers(0, 60), max_size=5),
    old=st.one_of(st.none(), st.integers(0, 60)),
    new=st.one_of(st.none(), st.integers(0, 60)),
    window=st.integers(1, 30),
)
def test_feature_redo_days_follow_the_sql_rule(
    reload: set[int], old: int | None, new: int | None, window: int
) -> None:
    def day(k: int | None) -> date | None:
        return None if k is None else D + timedelta(days=k)

    days = {D + timedelta(days=k) for k in reload}
    # the SQL coalesced a missing previous cutoff to the new one (no range); so does Python
    expected = _feature_days_sql(days, day(old), day(new), window)
    assert history.feature_redo_days(days, day(old), day(new), window) == expected


def test_a_moved_cutoff_redoes_the_days_whose_rows_appear_or_vanish() -> None:
    # newest day moves from D to D+3: feature rows of D+2 .. D+4 start to exist
    assert history.feature_redo_days(set(), D, D + timedelta(days=3), 28) == {
        D + timedelta(days=k) for k in (2, 3, 4)
    }
    # and back: the same days stop existing
    assert history.feature_redo_days(set(), D + timedelta(days=3), D, 28) == {
        D + timedelta(days=k) for k in (2, 3, 4)
    }


def test_the_window_is_dbt_projects_var_unless_the_build_overrides_it() -> None:
    assert history.max_feature_window(DBT_PROJECT_DIR, {}) == 28
    assert history.max_feature_window(DBT_PROJECT_DIR, {"max_feature_window": 35}) == 35


def _live_history(root: Path, days: list[date]) -> None:
    for model, column in history.HISTORY_MODELS.items():
        (root / model / "_schema").mkdir(parents=True)
        (root / model / "_schema" / "data_0.parquet").write_bytes(b"schema")
        for day in days:
            folder = root / model / f"{column}={day.isoformat()}"
            folder.mkdir()
            (folder / "old_0.parquet").write_bytes(f"{model} {day}".encode())


def test_carry_over_links_the_kept_days_and_leaves_out_the_redone(tmp_path: Path) -> None:
    live, build = tmp_path / "live", tmp_path / "build"
    days = [D + timedelta(days=k) for k in range(4)]
    _live_history(live, days)
    redo = {"stg_impressions": {days[3]}, "user_daily_features": {days[0], days[3]}}

    kept = history.carry_over(live, build, redo)

    assert kept["stg_impressions"] == 3 and kept["user_daily_features"] == 2
    assert kept["quarantined_impressions"] == 4
    assert set(history.day_folders(build / "stg_impressions")) == set(days[:3])
    assert set(history.day_folders(build / "user_daily_features")) == {days[1], days[2]}
    linked = build / "stg_impressions" / f"event_date={days[0]}" / "old_0.parquet"
    original = live / "stg_impressions" / f"event_date={days[0]}" / "old_0.parquet"
    assert linked.stat().st_ino == original.stat().st_ino  # a link, not a copy
    assert (build / "fct_labelled_impressions" / "_schema" / "data_0.parquet").is_file()


def test_carry_over_refuses_an_incomplete_live_history(tmp_path: Path) -> None:
    live = tmp_path / "live"
    _live_history(live, [D])
    (live / "item_daily_features" / "_schema" / "data_0.parquet").unlink()
    (live / "item_daily_features" / "_schema").rmdir()
    assert history.missing_models(live) == ["item_daily_features"]
    with pytest.raises(HistoryError, match="item_daily_features/_schema is missing"):
        history.carry_over(live, tmp_path / "build", {})


def test_a_kept_day_written_again_fails_the_build(tmp_path: Path) -> None:
    live, build = tmp_path / "live", tmp_path / "build"
    days = [D, D + timedelta(days=1)]
    _live_history(live, days)
    redo = {m: {days[1]} for m in history.HISTORY_MODELS}
    history.carry_over(live, build, redo)
    new_day = build / "fct_labelled_impressions" / f"event_date={days[1]}"
    new_day.mkdir()
    (new_day / "inv1_0.parquet").write_bytes(b"new")
    history.check_written(build, "inv1", redo)  # the redone day: fine

    # a day the build carried over gets a file of this build too: its rows would be there twice
    kept_day = build / "fct_labelled_impressions" / f"event_date={days[0]}"
    (kept_day / "inv1_0.parquet").write_bytes(b"again")
    with pytest.raises(HistoryError, match="written by this build but also carried over"):
        history.check_written(build, "inv1", redo)


def test_a_day_written_that_was_not_to_be_redone_fails_the_build(tmp_path: Path) -> None:
    build = tmp_path / "build"
    folder = build / "user_daily_features" / f"feature_date={D}"
    folder.mkdir(parents=True)
    (folder / "inv1_0.parquet").write_bytes(b"new")
    with pytest.raises(HistoryError, match="user_daily_features day"):
        history.check_written(build, "inv1", {"user_daily_features": set()})


def test_the_cutoff_dbt_built_must_be_the_one_the_history_was_prepared_for() -> None:
    history.check_cutoff(D, D)
    with pytest.raises(HistoryError, match="feature cutoff"):
        history.check_cutoff(D, D + timedelta(days=1))
