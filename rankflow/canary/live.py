"""The canary phase on live traffic (``canary.phase: live``; the default with your own data).

The simulated phase (:mod:`rankflow.sim.canary_phase`) plays closed-loop traffic through both
versions in minutes. With real users the phase is days of production traffic, so it is split
over canary runs:

1. **Start**: a canary whose challenger passed the offline gate sets ``@challenger`` and writes
   the phase (serving model, champion, challenger, start time, its looks so far) to
   ``<state>/canary/<serving model>.json``. Every deployed ``rankflow serve`` with
   ``serving.canary_share > 0`` then scores that share of users (stable hash of the user id)
   with ``@challenger`` and logs the arm and version of each row in its score log.
2. **Look**: every later canary run (the ``canary-look`` deployment daily, or
   ``rankflow canary``) trains nothing; it joins the score log rows served since the start by
   either version in its own arm to the labelled impressions the warehouse has loaded since, by
   (``request_id``, ``item_id``): your impression log carries the ``request_id`` the front end
   passed to ``/score``. Per user clicks and views per arm, CUPED-adjusted by the users' clicks
   and views in the ``canary.window_days`` before the start, go to the same always-valid mSPRT
   as the simulated phase, over all looks so far (valid however often and whenever it looks).
3. **Decision**: promote or reject under the promotion lock, as the simulated phase does, and
   the phase file is removed; "continue" leaves ``@challenger`` serving and records the look.
   A phase whose aliases moved outside the canary (``@challenger`` removed by hand, a rollback)
   is closed with a note and a new canary starts.

Only what production sees decides: served rows and their clicks. Nothing here reads the truth.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankflow.canary.stats import Looks, OnlineDecision, decide_online
from rankflow.errors import RankflowError
from rankflow.registry.promotion import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from rankflow.canary.outcome import CanaryOutcome
    from rankflow.config import CanaryConfig, OnlineGateConfig
    from rankflow.paths import StatePaths


log = logging.getLogger(__name__)


class LivePhaseError(RankflowError):
    """The live phase cannot be read or started (a corrupt phase file, no warehouse, a config
    the chosen phase cannot run with); says which file or key."""


@dataclass
class LivePhase:
    """One live canary phase: which versions, since when, and the looks taken so far."""

    serving_model: str
    champion: str
    challenger: str
    started_at: str  # ISO 8601 UTC; rows served before it do not count
    run_id: str  # the canary run that started it
    pre_period_days: int | None
    looks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return datetime.fromisoformat(self.started_at)

    def matches(self, aliases: dict[str, str]) -> bool:
        """Whether the registry still shows this phase: the same champion and challenger."""
        return aliases.get(CHAMPION) == self.champion and aliases.get(CHALLENGER) == self.challenger

    def describe(self) -> str:
        return (
            f"live canary phase of {self.serving_model} v{self.challenger} against "
            f"v{self.champion} since {self.started_at} ({len(self.looks)} looks)"
        )


def phase_path(paths: StatePaths, serving_model: str) -> Path:
    return paths.canary / f"{serving_model}.json"


def read_phase(paths: StatePaths, serving_model: str) -> LivePhase | None:
    path = phase_path(paths, serving_model)
    if not path.is_file():
        return None
    try:
        return LivePhase(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise LivePhaseError(
            f"{path}: not a live canary phase ({error}); remove it to start a new canary"
        ) from None


def write_phase(paths: StatePaths, phase: LivePhase) -> Path:
    """Write atomically: a crash mid-write leaves the previous looks, never half a file."""
    path = phase_path(paths, phase.serving_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(phase), indent=2))
    os.replace(tmp, path)
    return path


def end_phase(paths: StatePaths, serving_model: str) -> None:
    phase_path(paths, serving_model).unlink(missing_ok=True)


def start_phase(
    paths: StatePaths,
    serving_model: str,
    champion: str,
    challenger: str,
    run_id: str,
    pre_period_days: int | None,
    now: datetime | None = None,
) -> LivePhase:
    phase = LivePhase(
        serving_model=serving_model,
        champion=str(champion),
        challenger=str(challenger),
        started_at=(now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        run_id=run_id,
        pre_period_days=pre_period_days,
    )
    write_phase(paths, phase)
    return phase


# --------------------------------------------------------------------------------- opening
def check_phase_config(canary: CanaryConfig, source: str, serving_share: float) -> str:
    """The phase ``canary.phase`` resolves to with data from ``source``; refuse before any
    training what it cannot do (one line, names the keys). ``serving_share``: the deployed
    service's ``serving.canary_share``."""
    phase_kind = canary.resolved_phase(source)
    if phase_kind == "simulated" and source != "simulate":
        raise LivePhaseError(
            f"canary.phase: simulated needs the simulator's ground truth (source: simulate), "
            f"not source: {source}; use canary.phase: live (the default, auto) with "
            "your own data"
        )
    if phase_kind == "live" and serving_share <= 0:
        raise LivePhaseError(
            "canary.phase: live needs serving.canary_share > 0: it is the share of users the "
            f"deployed `rankflow serve` sends to @challenger (now {serving_share}); "
            f"set it (e.g. --set serving.canary_share={canary.share}) in the service's "
            "config and in the canary's"
        )
    return phase_kind


def open_phase(paths: StatePaths, client: MlflowClient, serving: str) -> LivePhase | None:
    """The live phase to look at, or None; a phase the registry no longer shows (its
    @challenger removed or @champion moved outside the canary) is closed with a log line."""
    from rankflow.registry.aliases import aliases_of

    phase = read_phase(paths, serving)
    if phase is None:
        return None
    aliases = aliases_of(client, serving)
    if phase.matches(aliases):
        return phase
    shown = ", ".join(f"@{a} -> v{v}" for a, v in sorted(aliases.items())) or "no aliases"
    log.warning(
        "canary: closing the %s: the registry moved outside it (%s)", phase.describe(), shown
    )
    end_phase(paths, serving)
    return None


def idle_outcome(client: MlflowClient, serving: str, seconds: float) -> CanaryOutcome:
    """A look-only run with no phase open: nothing to do."""
    from rankflow.canary.outcome import CanaryOutcome
    from rankflow.registry.aliases import aliases_of

    aliases = aliases_of(client, serving)
    return CanaryOutcome(
        decision="idle",
        reason="no live canary phase to look at (look-only run); nothing changed",
        serving_model=serving,
        champion_before=aliases.get(CHAMPION),
        aliases=aliases,
        seconds=round(seconds, 2),
    )


# --------------------------------------------------------------------------------- evidence
def labelled_impressions(
    paths: StatePaths, since: datetime | None, until: datetime | None
) -> pd.DataFrame:
    """Valid labelled impressions from the warehouse in ``[since, until)``:
    ``request_id, item_id, user_id, label``. Reads the live warehouse file read-only (a build
    swaps in a new file, so a reader never sees half a build)."""
    import duckdb

    if not paths.warehouse.is_file():
        raise LivePhaseError(
            f"{paths.warehouse}: no warehouse; run `rankflow build` so the impressions with "
            "their clicks are loaded"
        )
    where, params = [], []
    # The warehouse keeps event_timestamp as a naive UTC TIMESTAMP: compare in UTC, naive, so
    # the session's time zone never enters.
    if since is not None:
        where.append("event_timestamp >= ?")
        params.append(_naive_utc(since))
    if until is not None:
        where.append("event_timestamp < ?")
        params.append(_naive_utc(until))
    clause = f"where {' and '.join(where)}" if where else ""
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        return con.execute(
            "select request_id, item_id, user_id, label from main.fct_labelled_impressions "
            + clause,
            params,
        ).df()
    finally:
        con.close()


def _naive_utc(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def join_labels(served: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Served rows that were shown and labelled: inner join on (request_id, item_id), keeping
    rows whose user agrees (a request id reused for another user is not this impression)."""
    if served.empty or labels.empty:
        return pd.DataFrame(columns=["request_id", "item_id", "user_id", "arm", "p_click", "label"])
    labels = labels.astype({"request_id": str, "item_id": np.int64, "user_id": np.int64})
    served = served.astype({"request_id": str, "item_id": np.int64, "user_id": np.int64})
    served = served.drop(columns=["requested_at"], errors="ignore")
    joined = served.merge(
        labels.drop_duplicates(["request_id", "item_id"]),
        on=["request_id", "item_id"],
        how="inner",
        suffixes=("", "_impression"),
    )
    joined = joined[joined["user_id"] == joined["user_id_impression"]]
    return joined.drop(columns=["user_id_impression"]).reset_index(drop=True)


def pre_period(labels: pd.DataFrame) -> pd.DataFrame:
    """Per-user clicks and views before the phase (``user_id, pre_clicks, pre_views``)."""
    if labels.empty:
        return pd.DataFrame(columns=["user_id", "pre_clicks", "pre_views"])
    grouped = labels.groupby("user_id")["label"].agg(["sum", "count"]).reset_index()
    return grouped.rename(columns={"sum": "pre_clicks", "count": "pre_views"}).astype(
        {"user_id": np.int64, "pre_clicks": np.float64, "pre_views": np.float64}
    )


# --------------------------------------------------------------------------------- the look
@dataclass
class LookResult:
    decision: OnlineDecision
    phase: LivePhase
    arms: dict[str, dict[str, Any]]
    served_log: dict[str, Any] = field(default_factory=dict)  # PhaseRows.to_dict()
    notes: list[str] = field(default_factory=list)  # what reading the log left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "live",
            **self.decision.to_dict(),
            "looks": self.phase.looks,
            "arms": self.arms,
            "started_at": self.phase.started_at,
            "served_log": self.served_log,
            "notes": self.notes,
            "truth": {},
        }

    def summary(self) -> str:
        d = self.decision
        lines = [
            f"live phase look {len(self.phase.looks)} since {self.phase.started_at}: "
            f"{d.verdict}: {d.reason}"
        ]
        for arm in (CHAMPION, CHALLENGER):
            a = self.arms.get(arm)
            if a is not None:
                lines.append(
                    f"  {arm:<10} v{a['version']}: {a['impressions']:,} labelled, "
                    f"{a['clicks']:,} clicks, CTR {a['ctr']:.4f}, AUC {a['auc']:.4f}, "
                    f"calibration {a['calibration_ratio']:.3f}"
                )
        lines += [f"  log: {note}" for note in self.notes]
        return "\n".join(lines)


def take_look(
    phase: LivePhase,
    labelled: pd.DataFrame,
    pre: pd.DataFrame | None,
    rule: OnlineGateConfig,
    now: datetime | None = None,
) -> LookResult:
    """One look (pure; the caller reads the data and writes the phase): the cumulative
    labelled rows of the phase so far -> per-user clicks and views per arm -> the CUPED
    difference -> the always-valid rule over this and every earlier look of the phase."""
    from rankflow.canary.phase import estimate_from_per_user

    per_user = (
        labelled.groupby(["arm", "user_id"])["label"].agg(["sum", "count"]).reset_index()
        if not labelled.empty
        else pd.DataFrame(columns=["arm", "user_id", "sum", "count"])
    )
    estimate = estimate_from_per_user(per_user, pre)
    arms = _arm_evidence(labelled, phase)
    look = {
        "look": len(phase.looks) + 1,
        "at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        "clicks_champion": arms[CHAMPION]["clicks"],
        "views_champion": arms[CHAMPION]["impressions"],
        "clicks_challenger": arms[CHALLENGER]["clicks"],
        "views_challenger": arms[CHALLENGER]["impressions"],
        "difference": _finite(estimate.difference),
        "variance": _finite(estimate.variance),
        "cuped_theta": _finite(estimate.theta),
        "variance_reduction": _finite(estimate.variance_reduction),
    }
    looks = [*phase.looks, look]

    def column(key: str, missing: float) -> np.ndarray:
        return np.array([missing if x[key] is None else x[key] for x in looks], np.float64)

    evidence = Looks(
        column("clicks_champion", 0),
        column("views_champion", 0),
        column("clicks_challenger", 0),
        column("views_challenger", 0),
        variance=column("variance", np.inf),
        difference=column("difference", np.nan),
    )
    decision = decide_online(evidence, rule)
    updated = LivePhase(**{**asdict(phase), "looks": looks})
    return LookResult(decision, updated, arms)


def _finite(value: float) -> float | None:
    """JSON has no inf / nan: a look without an estimate stores null."""
    return float(value) if np.isfinite(value) else None


def _arm_evidence(labelled: pd.DataFrame, phase: LivePhase) -> dict[str, dict[str, Any]]:
    from models import metrics as m

    out: dict[str, dict[str, Any]] = {}
    for arm, version in ((CHAMPION, phase.champion), (CHALLENGER, phase.challenger)):
        rows = labelled[labelled["arm"] == arm] if not labelled.empty else labelled
        y = rows["label"].to_numpy(np.float64) if len(rows) else np.zeros(0)
        p = rows["p_click"].to_numpy(np.float64) if len(rows) else np.zeros(0)
        both = 0 < y.sum() < len(y)
        out[arm] = {
            "version": version,
            "users": int(rows["user_id"].nunique()) if len(rows) else 0,
            "impressions": len(rows),
            "clicks": int(y.sum()),
            "ctr": float(y.mean()) if len(y) else float("nan"),
            "mean_predicted": float(p.mean()) if len(p) else float("nan"),
            "auc": m.auc(y, p) if both else float("nan"),
            "logloss": m.logloss(y, p) if both else float("nan"),
            "calibration_ratio": float(p.mean() / y.mean()) if y.sum() > 0 else float("nan"),
        }
    return out


def look_at_phase(
    paths: StatePaths,
    feature_service: str,
    phase: LivePhase,
    rule: OnlineGateConfig,
    *,
    cuped: bool,
    now: datetime | None = None,
) -> LookResult:
    """Read the phase's served and labelled rows and take a look (the phase file is the
    caller's to write or remove, after the decision is applied)."""
    from rankflow.canary.served import served_rows

    read = served_rows(paths, feature_service, phase.champion, phase.challenger, phase.start)
    served = read.frame
    # The impressions of the phase are those of its requests: from the first request's own
    # time on (in production the start; in a replay of a past day, that day).
    first = pd.Timestamp(served["requested_at"].min()).to_pydatetime() if len(served) else None
    labels = labelled_impressions(paths, first, None) if first is not None else pd.DataFrame()
    labelled = join_labels(served, labels)
    pre = None
    if cuped and first is not None:
        days = phase.pre_period_days
        since = first - timedelta(days=days) if days is not None else None
        pre = pre_period(labelled_impressions(paths, since, first))
    look = take_look(phase, labelled, pre, rule, now=now)
    look.served_log, look.notes = read.to_dict(), read.notes()
    return look
