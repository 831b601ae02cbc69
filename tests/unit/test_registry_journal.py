"""A promotion as a recorded plan: where a killed one stopped, told from the aliases alone.

Properties over any aliases and any plan of alias writes (hypothesis): the aliases after any
prefix of the writes are recognised as that far along, and finishing from there ends where the
whole plan ends; aliases that are no step of the plan are reported, not written over.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rankflow.registry.journal import (
    MAX_RECORD_CHARS,
    AliasWrite,
    PlanRecord,
    new_record,
    resume_point,
)
from rankflow.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    AliasTarget,
    ServingState,
    VersionTag,
    canary_promotion,
    rollback_plan,
)

ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)
versions = st.sampled_from(["1", "2", "3", "5"])
alias_maps = st.dictionaries(st.sampled_from([*ALIASES, "other"]), versions)
plans = st.lists(
    st.builds(AliasWrite, st.sampled_from(ALIASES), st.none() | versions), min_size=1, max_size=4
)


def record_of(
    aliases: dict[str, str], writes: list[AliasWrite] | tuple[AliasWrite, ...]
) -> PlanRecord:
    return new_record(
        plan_id="p1",
        model="rankflow-ctr",
        decision="promote",
        by="canary run r1 (pid 7 on host)",
        why="canary promoted v5",
        started_at="2026-01-01T00:00:00Z",
        aliases=aliases,
        writes=tuple(writes),
    )


def applied(aliases: dict[str, str], writes: tuple[AliasWrite, ...]) -> dict[str, str]:
    """What the registry reads after ``writes`` (a deleted alias is absent, as MLflow shows it)."""
    out = dict(aliases)
    for write in writes:
        if write.version is None:
            out.pop(write.alias, None)
        else:
            out[write.alias] = write.version
    return out


def touched(aliases: dict[str, str], record: PlanRecord) -> dict[str, str | None]:
    return {alias: aliases.get(alias) for alias in record.before}


@given(alias_maps, plans, st.data())
def test_a_plan_killed_after_any_prefix_of_its_writes_is_finished_where_the_plan_ends(
    before: dict[str, str], writes: list[AliasWrite], data: st.DataObject
) -> None:
    record = record_of(before, writes)
    k = data.draw(st.integers(0, len(writes)), label="writes landed before the kill")
    registry = applied(before, record.writes[:k])

    resume = resume_point(record, registry)

    assert not resume.diverged
    assert resume.done is not None and resume.done >= k  # never redoes more than it must
    finished = applied(registry, resume.remaining)
    assert touched(finished, record) == record.after()
    assert finished == applied(before, record.writes)  # aliases the plan leaves alone: alone


@given(alias_maps, plans, st.data())
def test_aliases_that_are_no_step_of_the_plan_are_reported_and_nothing_is_written(
    before: dict[str, str], writes: list[AliasWrite], data: st.DataObject
) -> None:
    record = record_of(before, writes)
    moved = data.draw(st.sampled_from(sorted(record.before)), label="alias moved by hand")
    k = data.draw(st.integers(0, len(writes)), label="writes landed before the kill")
    registry = {**applied(before, record.writes[:k]), moved: "99"}  # a version no step names

    resume = resume_point(record, registry)

    assert resume.diverged and resume.remaining == ()
    assert resume.found[moved] == "99"
    assert "no step of it" in resume.describe() and "@" + moved + " v99" in resume.describe()


@given(alias_maps, plans, st.text(max_size=3000), st.text(max_size=6000))
def test_a_record_reads_back_as_written_and_fits_a_registered_model_tag(
    before: dict[str, str], writes: list[AliasWrite], why: str, tag_value: str
) -> None:
    record = new_record(
        plan_id="p1",
        model="rankflow-ctr",
        decision="rollback",
        by="rankflow rollback (pid 7 on host)",
        why=why,
        started_at="2026-01-01T00:00:00Z",
        aliases=before,
        writes=tuple(writes),
        tags=(VersionTag("5", "rankflow.rolled_back", tag_value),),
    )
    text = record.to_json()
    assert len(text) <= MAX_RECORD_CHARS
    assert PlanRecord.from_json(text) == record
    done = record.settled("done", "x" * 9000)
    assert PlanRecord.from_json(done.to_json()) == done


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", json.dumps({"id": "p1"}), json.dumps({"state": "weird"})],
)
def test_anything_but_a_record_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="not a promotion record"):
        PlanRecord.from_json(text)


def test_the_canary_promotion_killed_after_its_first_write_is_the_reported_state() -> None:
    """The observed failure: @previous already names the champion, @champion not yet moved."""
    state = ServingState(
        "rankflow-ctr",
        {CHAMPION: AliasTarget("3"), PREVIOUS: AliasTarget("2"), CHALLENGER: AliasTarget("5")},
    )
    plan = canary_promotion(state, "5", "won the canary", started_against="3")
    writes = tuple(AliasWrite(m.alias, m.version) for m in plan.moves)
    before = {CHAMPION: "3", PREVIOUS: "2", CHALLENGER: "5"}
    record = record_of(before, writes)
    killed = applied(before, writes[:1])
    assert killed == {CHAMPION: "3", PREVIOUS: "3", CHALLENGER: "5"}

    resume = resume_point(record, killed)

    assert resume.done == 1
    assert resume.remaining == (AliasWrite(CHAMPION, "5"), AliasWrite(CHALLENGER, None))
    assert resume.describe() == (
        "stopped after 1 of 3 alias writes (@challenger v5, @champion v3, @previous v3); "
        "finished: @champion -> v5, @challenger removed"
    )
    assert record.describe() == (
        "promote by canary run r1 (pid 7 on host) at 2026-01-01T00:00:00Z "
        "(@previous -> v3, @champion -> v5, @challenger removed)"
    )


def test_a_record_whose_writes_all_landed_only_needs_closing() -> None:
    before = {CHAMPION: "5", PREVIOUS: "3"}
    plan = rollback_plan(
        ServingState("rankflow-ctr", {k: AliasTarget(v) for k, v in before.items()}), "CTR fell"
    )
    record = record_of(before, [AliasWrite(m.alias, m.version) for m in plan.moves])
    resume = resume_point(record, {CHAMPION: "3"})
    assert resume.done == 2 and resume.remaining == ()
    assert resume.describe() == "all 2 alias writes had landed; only the record was left open"
    # The rollback's mark on the demoted version is part of the plan, for whoever finishes it.
    assert [(t.version, t.key) for t in plan.tags] == [("5", "rankflow.rolled_back")]
