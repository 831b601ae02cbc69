"""The soak's scheduled faults, applied halfway through a day's traffic, and the accounting of
served-log rows around them.

- ``kill``: SIGKILL of the scoring service, then a restart. What its in-memory log buffer held,
  and a batch its writer was writing, is gone, and its counters with it, so the counters are
  read just before the kill: rows acknowledged but neither on disk nor counted as dropped are
  the kill's loss, never more than the rows acknowledged and not yet counted written or
  dropped at that read.
- ``remove_logs``: an operator removes the service's log folder while it serves. The rows on
  disk at that moment are counted (they were logged, then deleted); the service makes the
  folders again on its next write.
- ``registry``: a registry mistake, ``@champion`` deleted while the service serves; the service
  keeps the model it has (rankflow/serving/holder.py). The operator puts the alias back after
  the day's traffic.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from rankflow.registry.promotion import CHAMPION
from rankflow.serving.served_log import score_log_dir

if TYPE_CHECKING:
    from rankflow.config import ScoringConfig
    from rankflow.settings import Settings
    from rankflow.sim.soak_service import LogCounters, ServiceProcess
    from rankflow.sim.soak_traffic import TrafficTally

FAULTS = ("kill", "remove_logs", "registry")


def score_rows_on_disk(folder: Path) -> int:
    """Rows of the score log's parquet files under ``folder`` (one per scored item)."""
    if not folder.is_dir():
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*.parquet"))


@dataclass
class LogAccount:
    """One day's served-log rows: counted by the service across its processes, found on
    disk, removed by the remove-logs fault, and lost to a kill."""

    written: int = 0  # the service's counters, summed over the day's processes
    dropped: int = 0
    removed_on_disk: int = 0  # rows on disk when the folder was removed (logged, then deleted)
    buffered_at_kill: int = 0  # the buffer /metrics showed just before the kill
    # acknowledged and not yet counted written or dropped just before the kill: in the buffer
    # or in the batch being written (the buffer gauge is 0 while a taken batch is written)
    unflushed_at_kill: int = 0
    notes: list[str] = field(default_factory=list)
    _base: LogCounters | None = None

    def open(self, counters: LogCounters) -> None:
        """Counters of the running process at the start of the day (or of a new process)."""
        self._base = counters

    def close(self, counters: LogCounters) -> None:
        """Add the counters moved since :meth:`open` (before a kill, at the end of the day)."""
        base = self._base
        self.written += counters.written - (base.written if base else 0)
        self.dropped += counters.dropped - (base.dropped if base else 0)
        self._base = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class DayFaults:
    """Applies one day's fault at midday; ``finish`` undoes what an operator would undo."""

    def __init__(
        self,
        fault: str | None,
        settings: Settings,
        scoring: ScoringConfig,
        service: ServiceProcess,
        account: LogAccount,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"soak fault {fault!r}: expected one of {', '.join(FAULTS)}")
        self.fault = fault
        self.settings = settings
        self.scoring = scoring
        self.service = service
        self.account = account
        self._removed_alias: str | None = None

    def __call__(self, tally: TrafficTally) -> None:
        if self.fault == "kill":
            self._kill(tally)
        elif self.fault == "remove_logs":
            self._remove_logs()
        elif self.fault == "registry":
            self._delete_champion_alias()

    def _kill(self, tally: TrafficTally) -> None:
        counters = self.service.counters()
        self.account.close(counters)
        self.account.buffered_at_kill = counters.buffered
        counted = self.account.written + self.account.dropped
        self.account.unflushed_at_kill = tally.acknowledged_rows - counted
        self.service.kill()
        self.service.start()
        self.account.open(self.service.counters())
        self.account.notes.append(
            f"kill -9 with {self.account.unflushed_at_kill} acknowledged rows not yet counted "
            f"written ({counters.buffered} in the buffer); restarted"
        )

    def _remove_logs(self) -> None:
        folder = self.settings.paths.logs / self.scoring.feature_service
        trash = folder.with_name(f".removed-{uuid.uuid4().hex[:8]}")
        if folder.is_dir():
            folder.rename(trash)  # one step: a write lands in the old folder or in a new one
            time.sleep(1.0)  # a flush that had the old folder open finishes there
            scores = score_log_dir(self.settings.paths, self.scoring.feature_service)
            rows = score_rows_on_disk(trash / scores.relative_to(folder))
            self.account.removed_on_disk += rows
            shutil.rmtree(trash)
            self.account.notes.append(f"log folder removed with {rows} score rows in it")

    def _delete_champion_alias(self) -> None:
        from rankflow.registry.aliases import alias_version
        from rankflow.tracking.setup import setup_tracking

        client = setup_tracking(self.scoring.tracking, self.settings).client
        champion = alias_version(client, self.scoring.model_name, CHAMPION)
        if champion is None:
            self.account.notes.append("registry mistake skipped: no @champion to delete")
            return
        client.delete_registered_model_alias(self.scoring.model_name, CHAMPION)
        self._removed_alias = str(champion.version)
        self.account.notes.append(f"@champion (v{champion.version}) deleted mid-day")

    def finish(self) -> None:
        """Put back what an operator puts back after the day (the deleted alias)."""
        if self._removed_alias is None:
            return
        from rankflow.registry.aliases import set_alias
        from rankflow.tracking.setup import setup_tracking

        client = setup_tracking(self.scoring.tracking, self.settings).client
        reason = "soak: the operator restores the alias deleted by mistake"
        set_alias(client, self.scoring.model_name, CHAMPION, self._removed_alias, reason)
        self.account.notes.append(f"@champion restored to v{self._removed_alias}")
        self._removed_alias = None
