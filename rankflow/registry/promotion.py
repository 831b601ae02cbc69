"""Promotion as a pure decision: candidates + where the aliases point + config -> a plan.

The serving model (``registry.serving_model``, default ``rankflow-ctr``) holds the aliases a
scoring service resolves: ``champion`` serves, ``challenger`` gets the canary share,
``previous`` is the rollback. Deciding where they should point and moving them are separate
steps, so that every branch of the decision is unit-tested without MLflow and the canary can
reuse both:

- :func:`decide_promotion` (the train step's policy): on the first run the better gated
  candidate becomes ``champion``; later runs only register (``registry.when_champion_exists:
  challenger`` also points ``challenger`` at the better gated candidate);
- :func:`promote_to_champion` (the canary's move): a version becomes ``champion`` and the
  old champion ``previous``, written in that order so that a crash between the two writes
  never leaves ``champion`` unset;
- :func:`rankflow.registry.aliases.apply_plan` carries a plan out through the MLflow client.

A plan is data: a tuple of :class:`AliasMove` (set an alias to a serving-model version, to a
family candidate that is registered in the serving model first, or delete it), each with the
reason that is recorded on the version, plus the champion the decision was taken against so
the apply step can refuse to act on a registry that changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rankflow.registry.gates import KIND_TITLES, Candidate, comparison, pick_best
from rankflow.registry.versions import TAG_ROLLED_BACK

if TYPE_CHECKING:
    from rankflow.config import RegistryConfig

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

Decision = Literal[
    "first_champion",
    "no_champion",
    "champion_kept",
    "challenger",
    "promote",
    "reject",
    "rollback",
]


@dataclass(frozen=True)
class AliasTarget:
    """The version an alias of the serving model points at, as read from the registry."""

    version: str
    fingerprint: str | None = None
    kind: str | None = None
    exists: bool = True  # False: the alias names a version the registry no longer has


@dataclass(frozen=True)
class ServingState:
    """The serving model's aliases at decision time (alias -> target)."""

    name: str
    aliases: Mapping[str, AliasTarget] = field(default_factory=dict)

    def live(self, alias: str) -> AliasTarget | None:
        """The alias's target if it points at a version that still exists."""
        target = self.aliases.get(alias)
        return target if target is not None and target.exists else None


@dataclass(frozen=True)
class AliasMove:
    """Point ``alias`` at ``version`` (a serving-model version) or at ``candidate`` (a family
    version, registered in the serving model first unless it is already); neither: delete it."""

    alias: str
    reason: str
    version: str | None = None
    candidate: Candidate | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.candidate is not None:
            raise ValueError(f"move of @{self.alias}: give a version or a candidate, not both")

    @property
    def deletes(self) -> bool:
        return self.version is None and self.candidate is None


@dataclass(frozen=True)
class VersionTag:
    """A tag a plan sets on a serving-model version once its aliases have moved."""

    version: str
    key: str
    value: str


@dataclass(frozen=True)
class PromotionPlan:
    """The alias moves a decision asks for, in the order they must be written."""

    decision: Decision
    reason: str  # why the aliases end up where they do (moves add their own reasons)
    moves: tuple[AliasMove, ...] = ()
    promoted: str | None = None  # the alias this plan gives a new model, if any
    expected_champion: str | None = None  # @champion's version the decision was taken against
    # Part of the plan, not written after it, so that a killed apply leaves them to whoever
    # finishes its alias moves (a rolled-back mark that went missing would let the next canary
    # re-propose the model).
    tags: tuple[VersionTag, ...] = ()

    def describe(self, name: str, versions: Mapping[str, str | None] | None = None) -> str:
        """One line: the reason, then each move with the version it resolved to (the model's
        name once: in the reason if there is one, else on the first move)."""
        versions = versions or {}
        parts = [self.reason] if self.reason else []
        for move in self.moves:
            if move.deletes:
                parts.append(f"@{move.alias} removed: {move.reason}")
                continue
            version = versions.get(move.alias) or move.version
            if version is None and move.candidate is not None:
                label = f"{move.candidate.name} v{move.candidate.version}"
            else:
                label = f"v{version}" if parts else f"{name} v{version}"
            parts.append(f"@{move.alias} -> {label}: {move.reason}")
        return "; ".join(parts)


def decide_promotion(
    candidates: Sequence[Candidate], state: ServingState, registry: RegistryConfig
) -> PromotionPlan:
    """The train step's policy: a first champion, else keep it (and maybe name a challenger).

    ``candidates``: this run's family versions with their test metrics and gate verdicts.
    A champion alias whose version no longer exists counts as no champion.
    """
    select_by = registry.select_by
    best = pick_best(candidates, select_by)
    compared = comparison(candidates, select_by)
    if state.live(CHAMPION) is None:
        return _first_champion(candidates, best, state, select_by, compared)
    return _champion_exists(best, state, registry, compared)


def _first_champion(
    candidates: Sequence[Candidate],
    best: Candidate | None,
    state: ServingState,
    select_by: str,
    compared: str,
) -> PromotionPlan:
    dangling = state.aliases.get(CHAMPION)
    expected = dangling.version if dangling is not None else None
    if best is None:
        failures = "; ".join(
            f"{c.kind}: {', '.join(c.gate.failures)}" for c in candidates if not c.gate.passed
        )
        moves: tuple[AliasMove, ...] = ()
        if dangling is not None:  # names a deleted version: nothing could load it
            moves = (AliasMove(CHAMPION, f"v{dangling.version} no longer exists"),)
        reason = f"no champion: no candidate passed the quality gates ({failures})"
        return PromotionPlan("no_champion", reason, moves, expected_champion=expected)
    why = (
        f"first champion: {KIND_TITLES.get(best.kind, best.kind)} ({best.name} "
        f"v{best.version}) passed the quality gates and has the best test "
        f"{select_by} of [{compared}]"
    )
    move = AliasMove(CHAMPION, why, candidate=best)
    return PromotionPlan("first_champion", "", (move,), CHAMPION, expected)


def _champion_exists(
    best: Candidate | None, state: ServingState, registry: RegistryConfig, compared: str
) -> PromotionPlan:
    champion = state.live(CHAMPION)
    assert champion is not None
    kept = (
        f"champion stays {state.name} v{champion.version} "
        f"({champion.kind or '?'}); promotion is the canary's job"
    )

    def keep(why: str) -> PromotionPlan:
        return PromotionPlan("champion_kept", kept + why, expected_champion=champion.version)

    if registry.when_champion_exists != "challenger":
        return keep(f"; this run registered [{compared}]")
    if best is None:
        return keep(f"; no challenger: no candidate passed the gates [{compared}]")
    if champion.fingerprint == best.fingerprint:
        return keep("; the best candidate is the champion itself")
    current = state.live(CHALLENGER)
    if current is not None and current.fingerprint == best.fingerprint:
        return keep(f"; @{CHALLENGER} is already v{current.version}")
    why = (
        f"challenger: {KIND_TITLES.get(best.kind, best.kind)} passed the quality gates with "
        f"the best test {registry.select_by} of [{compared}]"
    )
    move = AliasMove(CHALLENGER, why, candidate=best)
    return PromotionPlan("challenger", kept, (move,), CHALLENGER, champion.version)


def promote_to_champion(state: ServingState, version: str, reason: str) -> PromotionPlan:
    """``version`` (of the serving model) becomes champion; the old champion ``previous``.

    ``previous`` comes first in the plan: a crash between the two writes leaves the old
    champion serving (and also marked previous), never no champion.
    """
    version = str(version)
    old = state.live(CHAMPION)
    dangling = state.aliases.get(CHAMPION)
    expected = dangling.version if dangling is not None else None
    if old is not None and old.version == version:
        return PromotionPlan("champion_kept", f"v{version} is already champion", (), None, expected)
    moves = []
    if old is not None:
        moves.append(
            AliasMove(PREVIOUS, f"replaced as champion by v{version}", version=old.version)
        )
    moves.append(AliasMove(CHAMPION, reason, version=version))
    return PromotionPlan("promote", "", tuple(moves), CHAMPION, expected)


def canary_promotion(
    state: ServingState, version: str, reason: str, started_against: str
) -> PromotionPlan:
    """The canary's promotion: like :func:`promote_to_champion`, but decided against the
    champion the canary *started* with (so :func:`~rankflow.registry.aliases.apply_plan`
    aborts if anyone moved it since), and ``challenger`` is removed once it is champion."""
    current = state.aliases.get(CHAMPION)
    if current is None or current.version != str(started_against):
        # Moved since the canary started, even to this very version (a concurrent canary on the
        # same inputs shares it and promoted it first): the plan keeps its champion move, so
        # apply_plan's compare half refuses it instead of reporting a promotion of nothing.
        move = AliasMove(CHAMPION, reason, version=str(version))
        return PromotionPlan("promote", "", (move,), CHAMPION, str(started_against))
    plan = promote_to_champion(state, version, reason)
    moves = list(plan.moves)
    challenger = state.aliases.get(CHALLENGER)
    if challenger is not None and challenger.version == str(version):
        moves.append(AliasMove(CHALLENGER, f"v{version} was promoted to champion"))
    return PromotionPlan(
        plan.decision, plan.reason, tuple(moves), plan.promoted, str(started_against)
    )


def reject_challenger(
    state: ServingState, version: str, reason: str, started_against: str
) -> PromotionPlan:
    """The canary rejected ``version``: remove ``challenger`` if it still names it (another
    canary's challenger is left alone); the champion stays."""
    challenger = state.aliases.get(CHALLENGER)
    moves: tuple[AliasMove, ...] = ()
    if challenger is not None and challenger.version == str(version):
        moves = (AliasMove(CHALLENGER, f"v{version} rejected: {reason}"),)
    return PromotionPlan(
        "reject",
        f"champion kept; v{version} rejected: {reason}",
        moves,
        None,
        str(started_against),
    )


class NothingToRollBack(ValueError):
    """No ``previous`` alias, it names a deleted version, or it names the champion itself."""


def rollback_plan(state: ServingState, reason: str) -> PromotionPlan:
    """``previous`` becomes champion again and ``previous`` is removed (so a second rollback
    cannot bring the demoted model back); the demoted version keeps its history and is tagged
    rolled back.

    Raises :class:`NothingToRollBack` when there is no live ``previous``, or when it is the
    champion: a promotion killed between its alias writes leaves that, and "rolling back" to
    it would demote nothing while marking the serving model rolled back.
    """
    previous = state.live(PREVIOUS)
    if previous is None:
        raise NothingToRollBack(f"{state.name}: no @{PREVIOUS} to roll back to")
    current = state.aliases.get(CHAMPION)
    if current is not None and str(current.version) == str(previous.version):
        raise NothingToRollBack(
            f"{state.name}: @{PREVIOUS} is v{previous.version}, the same version as "
            f"@{CHAMPION}: nothing to roll back to"
        )
    expected = current.version if current is not None else None
    demoted = f"v{current.version}" if current is not None else "no champion"
    moves = (
        AliasMove(CHAMPION, f"rolled back from {demoted}: {reason}", version=previous.version),
        AliasMove(PREVIOUS, f"v{previous.version} restored as champion by a rollback"),
    )
    # The demoted version is marked so that a canary does not re-propose it (a deleted one
    # cannot carry a tag).
    marks: tuple[VersionTag, ...] = ()
    if current is not None and current.exists:
        marks = (VersionTag(current.version, TAG_ROLLED_BACK, reason[:5000]),)
    return PromotionPlan("rollback", f"rollback: {reason}", moves, CHAMPION, expected, marks)
