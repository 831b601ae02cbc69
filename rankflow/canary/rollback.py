"""``rankflow rollback``: ``@previous`` becomes ``@champion`` again, under the promotion lock;
and the guard that keeps a later canary from re-proposing the model it removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rankflow.errors import RankflowError
from rankflow.registry.aliases import AppliedPlan, apply_plan, read_serving_state
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
    promotion lock), with ``reason`` recorded on both versions; ``@previous`` is removed."""
    from rankflow.tracking.setup import setup_tracking

    if not reason.strip():
        raise RollbackError("rollback needs a reason (--reason '...'): it is recorded")
    client = setup_tracking(tracking, settings).client
    with promotion_lock(settings, serving):
        state = read_serving_state(client, serving)
        try:
            plan = rollback_plan(state, reason)
        except NothingToRollBack as error:
            raise RollbackError(str(error)) from None
        applied = apply_plan(client, serving, plan)
    demoted = plan.expected_champion
    if demoted is not None:
        client.set_model_version_tag(serving, demoted, TAG_ROLLED_BACK, reason[:5000])
        record_note(client, serving, demoted, f"rolled back (no longer champion): {reason}")
    return applied


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
