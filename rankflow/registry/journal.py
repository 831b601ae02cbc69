"""A promotion as a recorded plan, and where a killed one stopped (pure: no MLflow here).

MLflow moves one alias per call, so a promotion is several writes (``@previous``, then
``@champion``, then ``@challenger`` removed); a process killed between two of them leaves the
aliases half-moved, e.g. ``@previous`` already naming the version ``@champion`` still names.
So the alias writes a plan resolved to are recorded before the first of them and the record is
marked done after the last (:mod:`rankflow.registry.aliases` does the I/O). Whoever holds the
promotion lock next and finds a record still pending tells from the aliases alone how far the
writes got (:func:`resume_point`): after the first ``k`` of them (write the rest), or at no
step of the plan (someone moved an alias since: write nothing, set the record aside).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from rankflow.registry.promotion import VersionTag

# A registered-model tag's value is a VARCHAR(5000) in MLflow's SQL stores (Postgres enforces it)
MAX_RECORD_CHARS = 5000
MAX_TEXT_CHARS = 1000  # the free text of one record (why, a tag's value), so it always fits

RecordState = Literal["pending", "done", "abandoned"]
Aliases = Mapping[str, str | None]  # alias -> version (None or absent: unset)


@dataclass(frozen=True)
class AliasWrite:
    """One alias write of a plan: point ``alias`` at ``version``, or delete it (None)."""

    alias: str
    version: str | None


@dataclass(frozen=True)
class PlanRecord:
    """A plan's alias writes as recorded before the first: enough to finish them without the
    process that decided them (the reasons of the moves are summed up in ``why``)."""

    plan_id: str
    model: str
    decision: str
    by: str  # who applies it (the command or run, pid and host): the one to ask if it stops
    why: str
    started_at: str
    before: dict[str, str | None]  # every alias the plan writes, as read before the first write
    writes: tuple[AliasWrite, ...]
    tags: tuple[VersionTag, ...] = ()  # version tags written after the aliases (idempotent)
    state: RecordState = "pending"
    note: str = ""  # what the recovery found, once it settled the record

    def after(self, k: int | None = None) -> dict[str, str | None]:
        """The plan's aliases once its first ``k`` writes (all: None) are done."""
        aliases = dict(self.before)
        for write in self.writes[:k]:
            aliases[write.alias] = write.version
        return aliases

    def describe(self) -> str:
        """One line: what it is, who started it, when, and its writes."""
        writes = ", ".join(_shown_write(w) for w in self.writes)
        return f"{self.decision} by {self.by} at {self.started_at} ({writes})"

    def settled(self, state: RecordState, note: str) -> PlanRecord:
        return replace(self, state=state, note=_clip(note))

    def to_json(self) -> str:
        text = json.dumps(
            {
                "id": self.plan_id,
                "state": self.state,
                "model": self.model,
                "decision": self.decision,
                "by": self.by,
                "why": self.why,
                "started_at": self.started_at,
                "before": self.before,
                "writes": [[w.alias, w.version] for w in self.writes],
                "tags": [[t.version, t.key, t.value] for t in self.tags],
                "note": self.note,
            },
            sort_keys=True,
        )
        if len(text) > MAX_RECORD_CHARS:  # every free text is clipped: only a bug gets here
            raise ValueError(f"promotion record of {len(text)} chars > {MAX_RECORD_CHARS}")
        return text

    @classmethod
    def from_json(cls, text: str) -> PlanRecord:
        """The record ``to_json`` wrote; ValueError for anything else (a hand-edited tag)."""
        try:
            data = json.loads(text)
            return cls(
                plan_id=str(data["id"]),
                model=str(data["model"]),
                decision=str(data["decision"]),
                by=str(data["by"]),
                why=str(data["why"]),
                started_at=str(data["started_at"]),
                before={str(a): _version(v) for a, v in data["before"].items()},
                writes=tuple(AliasWrite(str(a), _version(v)) for a, v in data["writes"]),
                tags=tuple(VersionTag(str(v), str(k), str(x)) for v, k, x in data["tags"]),
                state=_state(data["state"]),
                note=str(data.get("note", "")),
            )
        except (TypeError, KeyError, AttributeError, ValueError) as error:
            raise ValueError(f"not a promotion record ({error!r}): {text[:200]!r}") from None


def new_record(
    *,
    plan_id: str,
    model: str,
    decision: str,
    by: str,
    why: str,
    started_at: str,
    aliases: Aliases,
    writes: tuple[AliasWrite, ...],
    tags: tuple[VersionTag, ...] = (),
) -> PlanRecord:
    """The pending record of ``writes`` about to be applied on ``aliases`` (the whole alias
    map as read; only the aliases the writes touch are kept)."""
    before = {w.alias: _version(aliases.get(w.alias)) for w in writes}
    clipped = tuple(VersionTag(t.version, t.key, _clip(t.value)) for t in tags)
    return PlanRecord(
        plan_id, model, decision, _clip(by), _clip(why), started_at, before, writes, clipped
    )


@dataclass(frozen=True)
class Resume:
    """Where a pending record's writes stopped, as the aliases show it."""

    record: PlanRecord
    found: dict[str, str | None]  # the record's aliases as read now
    done: int | None  # how many of its writes the aliases show; None: no step of the plan

    @property
    def diverged(self) -> bool:
        return self.done is None

    @property
    def remaining(self) -> tuple[AliasWrite, ...]:
        return () if self.done is None else self.record.writes[self.done :]

    def describe(self) -> str:
        n = len(self.record.writes)
        if self.done is None:
            return (
                f"the aliases read {_shown(self.found)}, which is no step of it (from "
                f"{_shown(self.record.before)} to {_shown(self.record.after())}): someone moved "
                "them since; nothing written, the record set aside"
            )
        if self.done == n:
            return f"all {n} alias writes had landed; only the record was left open"
        rest = ", ".join(_shown_write(w) for w in self.remaining)
        return f"stopped after {self.done} of {n} alias writes ({_shown(self.found)}); finished: {rest}"


def resume_point(record: PlanRecord, aliases: Aliases) -> Resume:
    """How many of ``record``'s writes ``aliases`` show: the largest ``k`` whose state after
    the first ``k`` writes is what the aliases read (a write that sets an alias to the value it
    already had makes two steps look alike; finishing from either ends in the same place)."""
    found = {alias: _version(aliases.get(alias)) for alias in record.before}
    for k in range(len(record.writes), -1, -1):
        if record.after(k) == found:
            return Resume(record, found, k)
    return Resume(record, found, None)


def _version(value: object) -> str | None:
    # MLflow may hand a version back as an int: versions compare as strings
    return None if value is None else str(value)


def _state(value: object) -> RecordState:
    if value not in ("pending", "done", "abandoned"):
        raise KeyError(f"state {value!r}")
    return value  # type: ignore[return-value]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 3] + "..."


def _shown_write(write: AliasWrite) -> str:
    return (
        f"@{write.alias} removed"
        if write.version is None
        else f"@{write.alias} -> v{write.version}"
    )


def _shown(aliases: Mapping[str, str | None]) -> str:
    return (
        ", ".join(f"@{a} unset" if v is None else f"@{a} v{v}" for a, v in sorted(aliases.items()))
        or "no aliases"
    )
