"""Reading and moving the serving model's aliases through the MLflow client.

:func:`read_serving_state` gives :func:`rankflow.registry.promotion.decide_promotion` its
input; :func:`apply_plan` writes the plan it returns. Every alias move records why: a
``rankflow.alias.<alias>.reason`` tag on the version and a dated line in its description, both
shown by the MLflow UI.

MLflow has no compare-and-set on aliases (``set_registered_model_alias`` is an upsert), so
:func:`apply_plan` checks that ``champion`` is still where the decision saw it and re-reads
every alias it wrote; a lock around decide-and-apply (``lock=``) is the caller's to give.
``ModelVersion.version`` may come back as an int: versions are compared as strings.

A plan is several alias writes, so :func:`apply_plan` records it first
(:mod:`rankflow.registry.journal`) and marks it done after the last write; whoever takes the
promotion lock next calls :func:`recover_interrupted` before reading the aliases, which
finishes a plan a killed process left half-written, or sets it aside when the aliases are no
step of it. The record is a tag of the serving model (:data:`TAG_PLAN`), not a file of the
state dir: it lives in the store the aliases live in, so every process that can move them sees
it, on any machine in the server profile (whose promotion lock is a Postgres lock, not a file),
and the MLflow UI shows the last plan and how it ended on the model's page.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from rankflow.errors import RankflowError
from rankflow.registry.gates import Candidate
from rankflow.registry.journal import AliasWrite, PlanRecord, new_record, resume_point
from rankflow.registry.promotion import (
    CHAMPION,
    AliasMove,
    AliasTarget,
    PromotionPlan,
    ServingState,
    VersionTag,
)
from rankflow.registry.versions import (
    TAG_FAMILY_VERSION,
    TAG_FINGERPRINT,
    TAG_KIND,
    find_version,
    now_utc,
    record_note,
    register_version,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


log = logging.getLogger(__name__)

TAG_PLAN = "rankflow.promotion"  # the serving model's last plan, as JSON (journal.PlanRecord)


class PromotionConflict(RankflowError):
    """The registry changed between deciding a plan and applying it; nothing more was moved."""


class _FromPlan:
    def __repr__(self) -> str:
        return "FROM_PLAN"


FROM_PLAN: Final = _FromPlan()  # apply_plan: check the champion the plan was decided against


def _missing(error: Exception) -> bool:
    code = str(getattr(error, "error_code", ""))
    return "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(error).lower()


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _missing(error):
            return None
        raise


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """alias -> version of the registered model ``name`` (empty if it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code):
            return {}
        raise
    return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}


def read_serving_state(client: MlflowClient, name: str) -> ServingState:
    """Every alias of ``name`` with its version's fingerprint and kind (or ``exists=False``)."""
    from mlflow.exceptions import MlflowException

    targets: dict[str, AliasTarget] = {}
    for alias, version in aliases_of(client, name).items():
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as error:
            if not _missing(error):
                raise
            targets[alias] = AliasTarget(version, exists=False)
            continue
        tags = mv.tags or {}
        targets[alias] = AliasTarget(version, tags.get(TAG_FINGERPRINT), tags.get(TAG_KIND))
    return ServingState(name, targets)


def set_alias(client: MlflowClient, name: str, alias: str, version: str, reason: str) -> None:
    """Point ``alias`` at ``version`` and record why on the version (tags + description)."""
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), f"rankflow.alias.{alias}.reason", reason)
    client.set_model_version_tag(name, str(version), f"rankflow.alias.{alias}.set_at", now_utc())
    record_note(client, name, str(version), f"became @{alias}: {reason}")


def serving_version(client: MlflowClient, serving: str, best: Candidate, why: str) -> str:
    """The serving model's version of family version ``best`` (registered now unless it is)."""
    existing = find_version(client, serving, best.fingerprint)
    if existing is not None:
        return str(existing.version)
    family = client.get_model_version(best.name, best.version)
    tags = {k: v for k, v in family.tags.items() if k != TAG_FINGERPRINT}
    tags[TAG_FAMILY_VERSION] = f"{best.name}/{best.version}"
    description = (family.description or "") + f"\n\nSame model as `{best.name}` v{best.version}."
    mv = register_version(
        client,
        serving,
        source=best.source,
        run_id=best.run_id,
        model_id=best.model_id,
        fingerprint=best.fingerprint,
        tags=tags,
        description=description.strip(),
    )
    record_note(client, best.name, best.version, f"registered as {serving} v{mv.version}: {why}")
    return str(mv.version)


@dataclass(frozen=True)
class AppliedPlan:
    """A plan as written: the version each moved alias got, and the aliases re-read after."""

    plan: PromotionPlan
    versions: dict[str, str | None]
    aliases: dict[str, str]

    def describe(self, name: str) -> str:
        return self.plan.describe(name, self.versions)


def apply_plan(
    client: MlflowClient,
    name: str,
    plan: PromotionPlan,
    *,
    expected_champion: str | _FromPlan | None = FROM_PLAN,
    lock: AbstractContextManager[Any] | None = None,
    by: str = "",
) -> AppliedPlan:
    """Write ``plan``'s moves in order on registered model ``name``; re-read to confirm.

    ``expected_champion``: the ``champion`` version (None: no champion) the plan assumes;
    if the registry says otherwise nothing is written and :class:`PromotionConflict` is
    raised. Default (:data:`FROM_PLAN`): the plan's own ``expected_champion``. A plan
    without moves writes nothing and checks nothing.
    ``lock``: held around check-and-write (compare-and-set across processes is the caller's
    lock; MLflow has none). ``by``: who applies it (:func:`actor`), kept in the plan's record.
    """
    expected = (
        plan.expected_champion if isinstance(expected_champion, _FromPlan) else expected_champion
    )
    written: dict[str, str | None] = {}
    with lock if lock is not None else contextlib.nullcontext():
        before = aliases_of(client, name)
        if plan.moves and before.get(CHAMPION) != (None if expected is None else str(expected)):
            raise PromotionConflict(
                f"{name}: @champion is {_shown(before.get(CHAMPION))}, the plan expected "
                f"{_shown(expected)}; nothing moved (decide again)"
            )
        if plan.moves:
            written = _apply_recorded(client, name, plan, before, by or actor("a promotion"))
        after = aliases_of(client, name)
    for alias, version in written.items():
        if after.get(alias) != version:
            raise PromotionConflict(
                f"{name}: @{alias} reads {_shown(after.get(alias))} after writing "
                f"{_shown(version)}: another process moved it"
            )
    return AppliedPlan(plan, written, after)


def actor(what: str) -> str:
    """Who moves the aliases, for the plan's record: ``what`` (a command, a run), pid, host."""
    return f"{what} (pid {os.getpid()} on {socket.gethostname()})"


def _apply_recorded(
    client: MlflowClient, name: str, plan: PromotionPlan, before: dict[str, str], by: str
) -> dict[str, str | None]:
    """Record the plan, write its moves in order, then its version tags, then mark it done.

    Candidates are registered in the serving model before the record, so that it names
    versions (registering moves no alias; a version a kill leaves unaliased is found again by
    its fingerprint)."""
    old = alias_version(client, name, CHAMPION)
    writes = tuple(AliasWrite(move.alias, _target(client, name, move)) for move in plan.moves)
    versions = {write.alias: write.version for write in writes}
    record = new_record(
        plan_id=uuid.uuid4().hex,
        model=name,
        decision=plan.decision,
        by=by,
        why=plan.describe(name, versions),
        started_at=now_utc(),
        aliases=before,
        writes=writes,
        tags=plan.tags,
    )
    _put_record(client, name, record)  # durable before the first alias write
    for move, write in zip(plan.moves, writes, strict=True):
        _write_alias(client, name, write.alias, write.version, move.reason)
        if move.alias == CHAMPION:
            _note_left_champion(client, name, old, write.version, move.reason)
    _set_tags(client, name, plan.tags)
    _put_record(client, name, record.settled("done", ""))
    return versions


def _note_left_champion(
    client: MlflowClient, name: str, old: ModelVersion | None, new: str | None, reason: str
) -> None:
    """The old champion's page says which version replaced it, and why."""
    if old is not None and new is not None and str(old.version) != new:
        record_note(client, name, str(old.version), f"left @champion for v{new}: {reason}")


def _target(client: MlflowClient, name: str, move: AliasMove) -> str | None:
    """The serving-model version a move points its alias at (None: it deletes the alias)."""
    if move.candidate is not None:
        return serving_version(client, name, move.candidate, move.reason)
    return None if move.version is None else str(move.version)


def _write_alias(
    client: MlflowClient, name: str, alias: str, version: str | None, reason: str
) -> None:
    """One alias write of a plan (None: delete the alias; already gone is fine)."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        set_alias(client, name, alias, version, reason)
        return
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as error:
        if not _missing(error):
            raise


def _set_tags(client: MlflowClient, name: str, tags: tuple[VersionTag, ...]) -> None:
    """A plan's version tags (idempotent, so a recovery writes them all again); a version
    deleted meanwhile cannot carry one and is skipped."""
    from mlflow.exceptions import MlflowException

    for tag in tags:
        try:
            client.set_model_version_tag(name, tag.version, tag.key, tag.value)
        except MlflowException as error:
            if not _missing(error):
                raise


def _put_record(client: MlflowClient, name: str, record: PlanRecord) -> None:
    client.set_registered_model_tag(name, TAG_PLAN, record.to_json())


def _record_text(client: MlflowClient, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if _missing(error):
            return None
        raise
    return (model.tags or {}).get(TAG_PLAN)


@dataclass(frozen=True)
class Recovery:
    """What the next holder of the promotion lock found of a plan left pending, and did."""

    model: str
    found: str  # the plan (or what the tag held instead)
    outcome: str
    moved: bool  # it wrote aliases

    def describe(self) -> str:
        return f"{self.model}: an interrupted {self.found}: {self.outcome}"


def recover_interrupted(client: MlflowClient, name: str, *, by: str) -> Recovery | None:
    """Settle the plan a killed process left pending on ``name``; None if there is none.

    Call it holding the promotion lock, before reading the aliases to decide on: the lock's
    holder is the only writer, so a pending record under it belongs to a process that died.
    If the aliases show the plan's first ``k`` writes, the rest are written (with its version
    tags) and it is marked done: the plan was decided under the lock and only its writing was
    cut short. If they are no step of it (someone moved an alias since) or a version it names
    was deleted, nothing is written and the record is set aside, saying what was found."""
    text = _record_text(client, name)
    if text is None:
        return None
    try:
        record = PlanRecord.from_json(text)
    except ValueError as error:
        client.delete_registered_model_tag(name, TAG_PLAN)
        return Recovery(name, f"tag {TAG_PLAN}", f"{error}; tag removed, nothing written", False)
    if record.state != "pending":
        return None
    resume = resume_point(record, aliases_of(client, name))
    gone = [str(w.version) for w in resume.remaining if not _exists(client, name, w)]
    if resume.diverged or gone:
        outcome = resume.describe()
        if gone:
            shown = ", ".join(f"v{v}" for v in gone)
            outcome = f"the registry no longer has {shown}: nothing written, the record set aside"
        _put_record(client, name, record.settled("abandoned", f"{outcome} ({by})"))
        return _logged(Recovery(name, record.describe(), outcome, False))
    reason = f"finishing an interrupted {record.decision} by {record.by}: {record.why}"
    for write in resume.remaining:
        _write_alias(client, name, write.alias, write.version, reason)
    _set_tags(client, name, record.tags)
    outcome = resume.describe()
    _put_record(client, name, record.settled("done", f"{outcome} ({by})"))
    return _logged(Recovery(name, record.describe(), outcome, bool(resume.remaining)))


def _exists(client: MlflowClient, name: str, write: AliasWrite) -> bool:
    """Whether the version a write points at is still registered (a delete: always)."""
    from mlflow.exceptions import MlflowException

    if write.version is None:
        return True
    try:
        client.get_model_version(name, str(write.version))
    except MlflowException as error:
        if _missing(error):
            return False
        raise
    return True


def _logged(recovery: Recovery) -> Recovery:
    # info, not warning: each caller reports it (a stage line, the train decision, the
    # rollback's one-line refusal); a warning would print it twice on the command line
    log.info("%s", recovery.describe())
    return recovery


def _shown(version: object) -> str:
    return "unset" if version is None else f"v{version}"
