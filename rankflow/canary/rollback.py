"""``rankflow rollback``: ``@previous`` becomes ``@champion`` again, under the promotion lock;
and the guard that keeps a later canary from re-proposing the model it removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rankflow.errors import RankflowError
from rankflow.registry.aliases import (
    AppliedPlan,
    actor,
    aliases_of,
    apply_plan,
    read_serving_state,
    recover_interrupted,
)
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import NothingToRollBack, rollback_plan
from rankflow.registry.versions import TAG_ROLLED_BACK, find_version, record_note

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.config import TrackingConfig
    from rankflow.settings import Settings


class RollbackError(RankflowError):
    """Nothing to roll back to, or the registry moved during the rollback."""


def rollback(
    settings: Settings, tracking: TrackingConfig, serving: str, reason: str
) -> AppliedPlan:
    """``@previous`` of the registered model ``serving`` becomes ``@champion`` again (under the
    promotion lock), with ``reason`` recorded on both versions; ``@previous`` is removed and
    the demoted version tagged rolled back (part of the plan, so a killed rollback leaves the
    tag to whoever finishes it).

    Refused (:class:`RollbackError`, nothing written) with no ``@previous``, when it is the
    champion itself, and when a plan a killed process left pending was found and settled
    first: the aliases the caller meant to roll back from are then not the ones they saw."""
    from rankflow.tracking.setup import setup_tracking

    if not reason.strip():
        raise RollbackError("rollback needs a reason (--reason '...'): it is recorded")
    client = setup_tracking(tracking, settings).client
    with promotion_lock(settings, serving):
        _settle_first(client, serving)
        state = read_serving_state(client, serving)
        try:
            plan = rollback_plan(state, reason)
        except NothingToRollBack as error:
            raise RollbackError(str(error)) from None
        applied = apply_plan(client, serving, plan, by=actor("rankflow rollback"))
    demoted = plan.expected_champion
    if plan.tags and demoted is not None:
        record_note(client, serving, demoted, f"rolled back (no longer champion): {reason}")
    return applied


def _settle_first(client: MlflowClient, serving: str) -> None:
    """Finish (or set aside) a plan a killed process left pending; if there was one, stop."""
    recovered = recover_interrupted(client, serving, by=actor("rankflow rollback"))
    if recovered is None:
        return
    now = ", ".join(f"@{a} v{v}" for a, v in sorted(aliases_of(client, serving).items()))
    raise RollbackError(
        f"{recovered.describe()}; nothing rolled back: the aliases now read {now or 'nothing'}"
        "; run the rollback again to roll back from them"
    )


def rolled_back_refusal(
    client: MlflowClient,
    serving: str,
    fingerprint: str,
    label: str,
    *,
    allow: bool,
    note: Callable[[str], None],
) -> tuple[str, str] | None:
    """(why, serving version) when a challenger with training ``fingerprint`` is the very
    model a rollback removed from ``@champion`` and ``allow`` is off; else None.

    Same training fingerprint = same training data, model config, model code and warm-start
    source, so the same model: after ``rankflow rollback`` the next scheduled canary on
    unchanged data would otherwise re-propose the model a person just took out of production,
    and a simulated or live phase can promote it again. A new day of data, a changed config or
    changed model code (``rankflow.training.fingerprints.CODE_PATHS``) is a new model and runs
    through every gate as usual."""
    existing = find_version(client, serving, fingerprint)
    if existing is None or TAG_ROLLED_BACK not in existing.tags:
        return None
    why = existing.tags[TAG_ROLLED_BACK]
    if allow:
        note(
            f"{label} is {serving} v{existing.version}, rolled back ({why}); canaried again "
            "because canary.allow_rolled_back is set"
        )
        return None
    reason = (
        f"{label} is {serving} v{existing.version}, the model `rankflow rollback` removed from "
        f"@champion ({why}); a canary does not re-propose it on the same inputs: retrain on "
        "newer data or a changed model config or code, or set canary.allow_rolled_back "
        "(--set canary.allow_rolled_back=true)"
    )
    return reason, str(existing.version)


def clear_rolled_back(client: MlflowClient, serving: str, version: str) -> None:
    """A rolled-back version promoted again (``canary.allow_rolled_back``) is no longer marked
    rolled back; its description keeps both events."""
    tags = client.get_model_version(serving, version).tags
    if TAG_ROLLED_BACK in tags:
        client.delete_model_version_tag(serving, version, TAG_ROLLED_BACK)
        record_note(
            client, serving, version, f"promoted again after its rollback ({tags[TAG_ROLLED_BACK]})"
        )
