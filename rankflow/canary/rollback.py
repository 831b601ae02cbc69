"""``rankflow rollback``: ``@previous`` becomes ``@champion`` again, under the promotion lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rankflow.errors import RankflowError
from rankflow.registry.aliases import AppliedPlan, apply_plan, read_serving_state
from rankflow.registry.lock import promotion_lock
from rankflow.registry.promotion import NothingToRollBack, rollback_plan

if TYPE_CHECKING:
    from rankflow.config import RankflowConfig
    from rankflow.settings import Settings


class RollbackError(RankflowError):
    """Nothing to roll back to, or the registry moved during the rollback."""


def rollback(settings: Settings, config: RankflowConfig, reason: str) -> AppliedPlan:
    """``@previous`` becomes ``@champion`` again (under the promotion lock), with ``reason``
    recorded on both versions; ``@previous`` is removed."""
    from rankflow.registry.versions import record_note
    from rankflow.tracking.setup import setup_tracking

    if not reason.strip():
        raise RollbackError("rollback needs a reason (--reason '...'): it is recorded")
    client, serving = setup_tracking(config, settings).client, config.registry.serving_model
    with promotion_lock(settings, serving):
        state = read_serving_state(client, serving)
        try:
            plan = rollback_plan(state, reason)
        except NothingToRollBack as error:
            raise RollbackError(str(error)) from None
        applied = apply_plan(client, serving, plan)
    demoted = plan.expected_champion
    if demoted is not None:
        client.set_model_version_tag(serving, demoted, "rankflow.rolled_back", reason[:5000])
        record_note(client, serving, demoted, f"rolled back (no longer champion): {reason}")
    return applied
