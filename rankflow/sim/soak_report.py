"""The soak's record: one row per day, the table it prints, and the invariants it checks.

Every invariant is computed from the rows and printed as a PASS / FAIL line with its numbers:

- **no traceback**: no stage of the soak raised, and the service's output has no traceback;
- **no request failed**: every request was answered 200, or 422 for an explicit past time;
- **no false FAIL**: no gap check before the drift's first served day failed;
- **drift caught**: the gap check of the drift's first served day failed;
- **every acknowledged row logged or counted**: each day, the rows of 200 answers equal the
  rows logged (on disk, plus those a removed folder held) plus those the service counted as
  dropped plus those a kill -9 took; those are never more than the rows acknowledged and not
  yet counted written or dropped by ``/metrics`` just before it. The service cannot count them
  (its counters die with it): the soak does, client side;
- **RSS**: the service's resident memory after the last day's traffic within 10% of the
  first day's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankflow.sim.soak_faults import LogAccount
from rankflow.sim.soak_traffic import TrafficTally

RSS_TOLERANCE = 0.10
# The checks that see a drift: covariate (the drift check) and concept (the metric gap on the
# day's labels). A skew or freshness FAIL is the data's, not the world's.
DRIFT_CHECKS = ("drift", "metric_gap")
COLUMNS = (
    ("day", 3),
    ("served", 10),
    ("fault", 11),
    ("drift", 5),
    ("requests", 8),
    ("acked", 7),
    ("logged", 7),
    ("dropped", 7),
    ("lost", 5),
    ("p99 ms", 7),
    ("RSS MB", 7),
    ("gap check", 9),
    ("canary", 28),
)


@dataclass
class DayRow:
    day: int
    served: str
    fault: str | None
    drifted: bool = False  # the plan's drift is on for this day's traffic
    drifted_traffic: bool = False  # the oracle drew the traffic drifted
    traffic: TrafficTally | None = None
    log: LogAccount | None = None
    on_disk: int = 0
    rss_mb: float = float("nan")
    verdict: str | None = None
    checks: dict[str, str] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)
    gap_notes: list[str] = field(default_factory=list)
    canary: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        return self.traffic.acknowledged_rows if self.traffic else 0

    @property
    def logged(self) -> int:
        """Rows the day's log holds on disk, plus those a removed folder held."""
        return self.on_disk + (self.log.removed_on_disk if self.log else 0)

    @property
    def dropped(self) -> int:
        return self.log.dropped if self.log else 0

    @property
    def lost(self) -> int:
        """Acknowledged rows neither logged nor counted as dropped."""
        return self.acknowledged - self.logged - self.dropped

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["traffic"] = self.traffic.to_dict() if self.traffic else None
        out["log"] = self.log.to_dict() if self.log else None
        out.update(acknowledged=self.acknowledged, logged=self.logged, lost=self.lost)
        return out


def _failing(row: DayRow) -> list[str]:
    return [name for name, verdict in row.checks.items() if verdict == "fail"]


def _canary_cell(canary: dict[str, Any] | None) -> str:
    if not canary:
        return "-"
    right = {True: "truth agrees", False: "truth disagrees", None: "truth n/a"}
    return f"{canary['decision']} ({right[canary['decision_right']]})"


@dataclass
class Invariant:
    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


class SoakReport:
    """The rows as they come, then the invariants."""

    def __init__(self, days: int, drift_from: int | None, service_log: Path) -> None:
        self.days = days
        self.drift_from = drift_from
        self.service_log = service_log
        self.rows: list[DayRow] = []
        self.invariants: list[Invariant] = []

    @property
    def passed(self) -> bool:
        return bool(self.invariants) and all(i.passed for i in self.invariants)

    def add(self, row: DayRow) -> None:
        self.rows.append(row)

    def header(self) -> str:
        return "  ".join(f"{name:>{width}}" for name, width in COLUMNS)

    def line(self, row: DayRow) -> str:
        t = row.traffic
        cells = (
            row.day,
            row.served,
            row.fault or "-",
            "on" if row.drifted else "-",
            t.requests if t else "-",
            row.acknowledged,
            row.logged,
            row.dropped,
            row.lost,
            f"{t.p99_ms():.1f}" if t else "-",
            f"{row.rss_mb:.0f}",
            (row.verdict or "error").upper(),
            _canary_cell(row.canary),
        )
        text = "  ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))
        details = [f"      why: {why}" for why in row.why]
        details += [f"      note: {note}" for note in (row.log.notes if row.log else [])]
        if row.canary:
            details.append(f"      canary ({row.canary['why']}): {row.canary['reason']}")
        details += [f"      ERROR {error}" for error in row.errors]
        return "\n".join([text, *details])

    def finish(self) -> None:
        self.invariants = [
            self._no_traceback(),
            self._no_failed_request(),
            self._no_false_fail(),
            self._drift_caught(),
            self._rows_accounted(),
            self._rss_steady(),
        ]
        # The table again, together: the days' rows are interleaved with the stages' output.
        table = [self.header(), *(self.line(r).splitlines()[0] for r in self.rows)]
        print("\n".join(["", *table, *(i.line() for i in self.invariants)]), flush=True)

    def _no_traceback(self) -> Invariant:
        errors = sum(len(r.errors) for r in self.rows)
        text = self.service_log.read_text() if self.service_log.is_file() else ""
        service = text.count("Traceback (most recent call last)")
        return Invariant(
            "no traceback",
            errors == 0 and service == 0,
            f"{errors} stage error(s) in the soak, {service} traceback(s) in the service output",
        )

    def _no_failed_request(self) -> Invariant:
        failures: dict[str, int] = {}
        for row in self.rows:
            for kind, n in (row.traffic.failures if row.traffic else {}).items():
                failures[kind] = failures.get(kind, 0) + n
        refused = sum(r.traffic.past_time_refused for r in self.rows if r.traffic)
        return Invariant(
            "no request failed",
            not failures,
            f"failures {failures or 'none'}; {refused} explicit past time(s) refused (422)",
        )

    def _no_false_fail(self) -> Invariant:
        before = [r for r in self.rows if not r.drifted]
        false = {r.day: _failing(r) for r in before if r.verdict == "fail"}
        shown = "; ".join(f"day {d}: {', '.join(c)}" for d, c in false.items())
        return Invariant(
            "no FAIL before the drift",
            not false,
            f"{len(false)} of {len(before)} drift-free day(s) failed"
            + (f" ({shown})" if shown else ""),
        )

    def _drift_caught(self) -> Invariant:
        name = "drift caught on its first served day"
        if self.drift_from is None:
            return Invariant(name, True, "no drift planned")
        first = next((r for r in self.rows if r.day == self.drift_from), None)
        if first is None:
            return Invariant(name, False, "day not reached")
        caught = [r.day for r in self.rows if r.drifted and set(_failing(r)) & set(DRIFT_CHECKS)]
        return Invariant(
            name,
            first.day in caught,
            f"day {first.day}: {str(first.verdict).upper()} (failing: "
            f"{', '.join(_failing(first)) or 'none'}; a drift is caught by "
            f"{' or '.join(DRIFT_CHECKS)}); drifted days caught: {caught or 'none'}",
        )

    def _rows_accounted(self) -> Invariant:
        bad, killed = [], []
        for row in self.rows:
            unflushed = row.log.unflushed_at_kill if row.log and row.fault == "kill" else 0
            if row.fault == "kill":
                killed.append(
                    f"day {row.day}: {row.lost} lost to kill -9 (of {unflushed} not yet "
                    "counted written just before it)"
                )
            if row.lost < 0 or row.lost > unflushed:
                bad.append(f"day {row.day}: {row.lost} of {row.acknowledged}")
        total = sum(r.acknowledged for r in self.rows)
        detail = f"{total} rows acknowledged; unaccounted: {', '.join(bad) or 'none'}"
        return Invariant(
            "every acknowledged row logged or counted",
            not bad,
            detail + ("; " + "; ".join(killed) if killed else ""),
        )

    def _rss_steady(self) -> Invariant:
        measured = [r for r in self.rows if not math.isnan(r.rss_mb)]
        if len(measured) < 2:
            return Invariant("service RSS steady", False, "fewer than two days measured")
        first, last = measured[0], measured[-1]
        change = last.rss_mb / first.rss_mb - 1
        return Invariant(
            "service RSS steady",
            abs(change) <= RSS_TOLERANCE,
            f"day {first.day} {first.rss_mb:.0f} MB, day {last.day} {last.rss_mb:.0f} MB "
            f"({change:+.1%}; at most {RSS_TOLERANCE:.0%})",
        )

    def write(self, path: Path) -> None:
        document = {
            "days": self.days,
            "drift_from": self.drift_from,
            "rows": [r.to_dict() for r in self.rows],
            "invariants": [asdict(i) for i in self.invariants],
            "passed": self.passed,
        }
        path.write_text(json.dumps(document, indent=2, default=str))
        print(f"soak record: {path}", flush=True)
