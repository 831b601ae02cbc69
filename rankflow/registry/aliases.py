"""Reading and moving the serving model's aliases through the MLflow client.

:func:`read_serving_state` gives :func:`rankflow.registry.promotion.decide_promotion` its
input; :func:`apply_plan` writes the plan it returns. Every alias move records why: a
``rankflow.alias.<alias>.reason`` tag on the version and a dated line in its description, both
shown by the MLflow UI.

MLflow has no compare-and-set on aliases (``set_registered_model_alias`` is an upsert), so
:func:`apply_plan` checks that ``champion`` is still where the decision saw it and re-reads
every alias it wrote; a lock around decide-and-apply (``lock=``) is the caller's to give.
``ModelVersion.version`` may come back as an int: versions are compared as strings.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from rankflow.errors import RankflowError
from rankflow.registry.gates import Candidate
from rankflow.registry.promotion import (
    CHAMPION,
    AliasMove,
    AliasTarget,
    PromotionPlan,
    ServingState,
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
) -> AppliedPlan:
    """Write ``plan``'s moves in order on registered model ``name``; re-read to confirm.

    ``expected_champion``: the ``champion`` version (None: no champion) the plan assumes;
    if the registry says otherwise nothing is written and :class:`PromotionConflict` is
    raised. Default (:data:`FROM_PLAN`): the plan's own ``expected_champion``. A plan
    without moves writes nothing and checks nothing.
    ``lock``: held around check-and-write (compare-and-set across processes is the caller's
    lock; MLflow has none).
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
        old = alias_version(client, name, CHAMPION) if plan.moves else None
        for move in plan.moves:
            written[move.alias] = _write(client, name, move)
            if move.alias == CHAMPION and old is not None:
                new = written[move.alias]
                if new is not None and str(old.version) != new:
                    note = f"left @champion for v{new}: {move.reason}"
                    record_note(client, name, str(old.version), note)
        after = aliases_of(client, name)
    for alias, version in written.items():
        if after.get(alias) != version:
            raise PromotionConflict(
                f"{name}: @{alias} reads {_shown(after.get(alias))} after writing "
                f"{_shown(version)}: another process moved it"
            )
    return AppliedPlan(plan, written, after)


def _write(client: MlflowClient, name: str, move: AliasMove) -> str | None:
    """One move; the version the alias now names (None: deleted)."""
    from mlflow.exceptions import MlflowException

    if move.deletes:
        try:
            client.delete_registered_model_alias(name, move.alias)
        except MlflowException as error:
            if not _missing(error):
                raise
        return None
    if move.candidate is not None:
        version = serving_version(client, name, move.candidate, move.reason)
    else:
        version = str(move.version)
    set_alias(client, name, move.alias, version, move.reason)
    return version


def _shown(version: object) -> str:
    return "unset" if version is None else f"v{version}"
