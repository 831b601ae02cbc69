"""Structural validation of a raw folder against docs/data-contract.md."""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rankflow.data.contract import CONTRACT, ContractError, RawInventory, validate_raw
from rankflow.paths import REPO_ROOT
from rankflow.sim.simulate import SimulationConfig, simulate

END = date(2024, 3, 5)
DAYS = [END - timedelta(days=k) for k in range(4, 0, -1)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    config = SimulationConfig(n_users=300, n_items=100, n_impressions=5_000, days=4, end_date=END)
    simulate(config, root / "raw", root / "truth")
    return root / "raw"


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    """A private copy each test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def rewrite(path: Path, change) -> None:  # change: pa.Table -> pa.Table
    pq.write_table(change(pq.read_table(path)), path)


def count(raw: Path, table: str) -> int:
    """Rows the simulator wrote (users and items alive in the window; a day's impressions are
    a function of its date), read from the Parquet footers."""
    return sum(pq.read_metadata(f).num_rows for f in (raw / table).rglob("*.parquet"))


def day_file(raw: Path, day: date) -> Path:
    return raw / "impressions" / f"event_date={day}" / "part-0.parquet"


def test_a_simulated_dataset_passes(raw: Path) -> None:
    inventory = validate_raw(raw)
    assert isinstance(inventory, RawInventory)
    assert inventory.rows == {t: count(raw, t) for t in ("users", "items", "impressions")}
    assert inventory.rows["users"] >= 300 and 4_500 < inventory.rows["impressions"] < 5_500
    assert inventory.partition_dates == DAYS
    assert [len(inventory.files[t]) for t in ("users", "items", "impressions")] == [1, 1, 4]
    assert inventory.extra_columns == {} and inventory.notes == []
    assert f"{count(raw, 'impressions'):,} rows" in str(inventory)


def test_extra_columns_are_allowed_and_reported(raw: Path) -> None:
    rewrite(
        raw / "items" / "items.parquet",
        lambda t: t.append_column("brand", pa.array(["x"] * t.num_rows)),
    )
    inventory = validate_raw(raw)
    assert inventory.extra_columns == {"raw/items/items.parquet": ["brand"]}


def test_missing_column_names_file_and_column(raw: Path) -> None:
    rewrite(raw / "items" / "items.parquet", lambda t: t.drop_columns(["price"]))
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    message = str(error.value)
    assert "raw/items/items.parquet: column 'price' is missing, expected float64" in message
    assert [(p.where, p.column) for p in error.value.problems] == [
        ("raw/items/items.parquet", "price")
    ]


def test_uncastable_values_are_counted(raw: Path) -> None:
    def price_as_text(table: pa.Table) -> pa.Table:
        text = [f"{v:.2f}" for v in table["price"].to_pylist()]
        text[:3] = ["cheap", "n/a", "1,5"]
        return table.set_column(table.schema.get_field_index("price"), "price", pa.array(text))

    rewrite(raw / "items" / "items.parquet", price_as_text)
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    assert (
        "raw/items/items.parquet: column 'price' has type string, expected float64: "
        f"3 of {count(raw, 'items')} values cannot be cast"
    ) in str(error.value)


def test_castable_values_of_another_type_pass_with_a_note(raw: Path) -> None:
    def loose_types(table: pa.Table) -> pa.Table:
        table = table.set_column(0, "user_id", pc.cast(table["user_id"], pa.float64()))
        index = table.schema.get_field_index("signup_ts")
        iso = pc.strftime(table["signup_ts"], format="%Y-%m-%dT%H:%M:%SZ")
        return table.set_column(index, "signup_ts", iso)

    rewrite(raw / "users" / "users.parquet", loose_types)
    inventory = validate_raw(raw)
    notes = "\n".join(inventory.notes)
    assert "column 'user_id' has type double; every value casts to int64" in notes
    assert "column 'signup_ts' has type string; every value casts to timestamp" in notes


def test_fractional_ids_and_types_without_a_cast_fail(raw: Path) -> None:
    def broken(table: pa.Table) -> pa.Table:
        ids = pc.add(pc.cast(table["user_id"], pa.float64()), pa.scalar(0.5)).to_pylist()
        ids[5:] = [float(i) for i in range(len(ids) - 5)]
        table = table.set_column(0, "user_id", pa.array(ids))
        index = table.schema.get_field_index("signup_ts")
        return table.set_column(index, "signup_ts", pa.array(range(table.num_rows), pa.int64()))

    rewrite(raw / "users" / "users.parquet", broken)
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    message = str(error.value)
    n = count(raw, "users")
    assert f"column 'user_id' has type double, expected int64: 5 of {n} values cannot be cast" in (
        message
    )
    assert f"column 'signup_ts' has type int64, expected timestamp: {n} of {n}" in message


def test_missing_folder_is_named(raw: Path) -> None:
    shutil.rmtree(raw / "items")
    with pytest.raises(
        ContractError, match=r"raw/items/: folder is missing, expected items/\*\.parquet"
    ):
        validate_raw(raw)


def test_folder_without_parquet_files(raw: Path) -> None:
    (raw / "users" / "users.parquet").rename(raw / "users" / "users.csv")
    with pytest.raises(ContractError, match=r"raw/users/: has no parquet files"):
        validate_raw(raw)


def test_missing_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="nowhere: folder is missing"):
        validate_raw(tmp_path / "nowhere")


def test_partition_with_rows_of_another_day(raw: Path) -> None:
    # A day-3 file copied into day 2's partition: its rows all belong to the next day.
    intruder = day_file(raw, DAYS[1]).with_name("late.parquet")
    shutil.copy(day_file(raw, DAYS[2]), intruder)
    n_rows = pq.read_metadata(intruder).num_rows
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    message = str(error.value)
    where = f"raw/impressions/event_date={DAYS[1]}/late.parquet"
    assert (
        f"{where}: column 'ts' has {n_rows} of {n_rows} rows outside its partition day" in message
    )
    assert f"rows from {DAYS[2]}" in message
    assert [(p.where, p.column) for p in error.value.problems] == [(where, "ts")]


def test_trusted_files_skip_the_value_rules_but_not_the_schema(raw: Path) -> None:
    # A trusted file (unchanged since a build's check passed it) is not read for values again:
    # the intruder's rows of another day go unseen when it is trusted, found when it is not;
    # a missing column in a trusted file is still found (footers are always read).
    intruder = day_file(raw, DAYS[1]).with_name("late.parquet")
    shutil.copy(day_file(raw, DAYS[2]), intruder)
    with pytest.raises(ContractError, match="outside its partition day"):
        validate_raw(raw, deep=(), trusted=[day_file(raw, DAYS[1])])
    inventory = validate_raw(raw, deep=(), trusted=[intruder])
    assert inventory.rows["impressions"] == count(raw, "impressions")

    other = day_file(raw, DAYS[0])
    rewrite(other, lambda t: t.drop_columns(["device"]))
    with pytest.raises(ContractError, match=r"part-0.parquet: column 'device' is missing"):
        validate_raw(raw, deep=(), trusted=[intruder, other])


def test_a_file_asked_to_decode_is_checked_in_full_even_if_trusted(raw: Path) -> None:
    intruder = day_file(raw, DAYS[1]).with_name("late.parquet")
    shutil.copy(day_file(raw, DAYS[2]), intruder)
    with pytest.raises(ContractError, match="outside its partition day"):
        validate_raw(raw, deep=[intruder], trusted=[intruder])


def test_a_trusted_file_of_a_castable_type_keeps_its_note(raw: Path) -> None:
    path = raw / "users" / "users.parquet"
    rewrite(path, lambda t: t.set_column(0, "user_id", pc.cast(t["user_id"], pa.float64())))
    checked = validate_raw(raw, deep=())
    trusted = validate_raw(raw, deep=(), trusted=[path])
    assert checked.notes == trusted.notes
    assert any("every value casts to int64" in note for note in trusted.notes)


def test_naive_timestamps_are_read_as_utc(raw: Path) -> None:
    path = day_file(raw, DAYS[0])
    rewrite(path, lambda t: t.set_column(2, "ts", pc.cast(t["ts"], pa.timestamp("ns"))))
    inventory = validate_raw(raw)
    assert any("naive timestamps; read as UTC" in note for note in inventory.notes)


def test_stray_files_and_bad_partition_names(raw: Path) -> None:
    shutil.copy(day_file(raw, DAYS[0]), raw / "impressions" / "loose.parquet")
    (raw / "impressions" / "day=2024-03-01").mkdir()
    (raw / "impressions" / "event_date=2024-02-30").mkdir()
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    wheres = [p.where for p in error.value.problems]
    assert wheres == [
        "raw/impressions/loose.parquet",
        "raw/impressions/day=2024-03-01/",
        "raw/impressions/event_date=2024-02-30/",
    ]


def test_one_error_lists_every_problem(raw: Path) -> None:
    rewrite(raw / "users" / "users.parquet", lambda t: t.drop_columns(["segment"]))
    rewrite(day_file(raw, DAYS[3]), lambda t: t.drop_columns(["clicked", "device"]))
    (raw / "items" / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(ContractError) as error:
        validate_raw(raw)
    found = {(p.where, p.column) for p in error.value.problems}
    assert found == {
        ("raw/users/users.parquet", "segment"),
        ("raw/items/items.parquet", None),
        (f"raw/impressions/event_date={DAYS[3]}/part-0.parquet", "device"),
        (f"raw/impressions/event_date={DAYS[3]}/part-0.parquet", "clicked"),
    }
    assert str(error.value).startswith(
        f"raw data in {raw} does not follow docs/data-contract.md (4 problems)"
    )


def test_the_docs_tables_match_the_contract() -> None:
    """docs/data-contract.md and CONTRACT must not drift apart."""
    text = (REPO_ROOT / "docs" / "data-contract.md").read_text()
    for table, columns in CONTRACT.items():
        section = text.split(f"### {table}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        rows = re.findall(r"^\|\s*`(\w+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", section, re.M)
        documented = {name: (kind.split()[0], "nullable" in rule) for name, kind, rule in rows}
        assert documented == {name: (spec.type, spec.nullable) for name, spec in columns.items()}, (
            table
        )


def test_a_table_without_rows_is_an_error(raw: Path) -> None:
    rewrite(raw / "users" / "users.parquet", lambda t: t.slice(0, 0))
    with pytest.raises(ContractError, match=r"raw/users/: has no rows, expected at least one row"):
        validate_raw(raw)


@pytest.mark.parametrize("module", ["contract", "contract_types", "raw_files"])
def test_the_flows_contract_cache_key_follows_every_module_of_the_check(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cached contract-check result must not outlive a change to any part of the checker.
    import inspect

    from flows import policies
    from rankflow.config import load_config
    from rankflow.data import contract, contract_types, raw_files
    from rankflow.paths import StatePaths

    target = {"contract": contract, "contract_types": contract_types, "raw_files": raw_files}
    config, paths = load_config(), StatePaths(tmp_path)
    before = policies.contract_key(config, paths)
    real = inspect.getsource
    monkeypatch.setattr(
        inspect, "getsource", lambda m: real(m) + ("\n# changed" if m is target[module] else "")
    )
    assert policies.contract_key(config, paths) != before
