"""Quality gates and the choice between candidates: pure functions over test metrics.

Absolute gates (``registry.gates`` in YAML) decide whether a candidate may take an alias at
all; a failing gate moves no alias. Among the candidates that pass, ``registry.select_by``
picks the better one. Nothing here talks to MLflow: :mod:`rankflow.registry.promotion` turns
these verdicts into a plan of alias moves, :mod:`rankflow.registry.aliases` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rankflow.config import QualityGates

KIND_TITLES = {
    "wide_deep": "Wide & Deep",
    "dcn": "DCN-V2",
    "lr_baseline": "logistic regression baseline",
}

# Higher is better for these selection metrics, lower for the rest.
_HIGHER_IS_BETTER = {"auc"}


# --------------------------------------------------------------------------------------------
# Quality gates (pure functions)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """Each gate's verdict (``"pass: ..."`` / ``"FAIL: ..."``) and whether all passed."""

    checks: dict[str, str]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.passed:
            return "passed all quality gates (" + "; ".join(self.checks.values()) + ")"
        return "failed quality gates: " + "; ".join(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": dict(self.checks), "failures": list(self.failures)}


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_gates(metrics: Mapping[str, float], gates: QualityGates) -> GateResult:
    """Check test-split ``metrics`` (``evaluate``'s keys) against the absolute gates.

    A gate whose metric is missing or not finite fails: an unmeasured model is not promoted.
    Each verdict reads as what holds: ``AUC 0.7120 >= 0.6`` passing, ``AUC 0.5396 < 0.6``
    failing, ``AUC n/a (not measured)``.
    """
    checks: dict[str, str] = {}
    failures: list[str] = []

    def check(name: str, what: str, value: float | None, ok: bool, held: str, broken: str) -> None:
        if value is None:
            text, ok = f"{what} n/a (not measured)", False
        else:
            text = f"{what} {_fmt(value)} {held if ok else broken}"
        checks[name] = f"{'pass' if ok else 'FAIL'}: {text}"
        if not ok:
            failures.append(f"{name}: {text}")

    def at_least(name: str, what: str, value: float | None, bound: float) -> None:
        ok = value is not None and value >= bound
        check(name, what, value, ok, f">= {bound}", f"< {bound}")

    def at_most(name: str, what: str, value: float | None, bound: float) -> None:
        ok = value is not None and value <= bound
        check(name, what, value, ok, f"<= {bound}", f"> {bound}")

    auc = finite(metrics.get("auc"))
    if gates.min_auc is not None:
        at_least("min_auc", "AUC", auc, gates.min_auc)
    if gates.max_ne is not None:
        at_most("max_ne", "NE", finite(metrics.get("ne")), gates.max_ne)
    if gates.max_ece is not None:
        at_most("max_ece", "ECE", finite(metrics.get("ece")), gates.max_ece)
    if gates.calibration_ratio is not None:
        low, high = gates.calibration_ratio
        ratio = finite(metrics.get("calibration_ratio"))
        ok = ratio is not None and low <= ratio <= high
        bounds = f"[{low}, {high}]"
        check(
            "calibration_ratio", "calibration ratio", ratio, ok, f"in {bounds}", f"outside {bounds}"
        )
    if gates.min_auc_lift_over_baseline is not None:
        base = finite(metrics.get("baseline_auc"))
        lift = None if auc is None or base is None else auc - base
        what = f"AUC {_fmt(auc)} - baseline {_fmt(base)} ="
        at_least("min_auc_lift_over_baseline", what, lift, gates.min_auc_lift_over_baseline)
    return GateResult(checks=checks, failures=tuple(failures))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class Candidate:
    """A registered model version competing for an alias, with its test metrics and gates."""

    kind: str
    name: str  # registered model (the family's)
    version: str
    run_id: str | None
    source: str
    model_id: str | None
    fingerprint: str
    metrics: dict[str, float]
    gate: GateResult


def better(a: Candidate, b: Candidate, select_by: str) -> bool:
    """Whether ``a`` beats ``b`` on ``select_by`` (ties: the earlier kind name, stable)."""
    va = finite(a.metrics.get(select_by))
    vb = finite(b.metrics.get(select_by))
    if va is None or vb is None:
        return vb is None and va is not None
    if va != vb:
        return va > vb if select_by in _HIGHER_IS_BETTER else va < vb
    return a.kind < b.kind


def pick_best(
    candidates: Sequence[Candidate], select_by: Literal["auc", "logloss", "ne"] | str
) -> Candidate | None:
    """The best candidate that passed its gates, by ``select_by``; None if none passed."""
    best: Candidate | None = None
    for candidate in candidates:
        if not candidate.gate.passed:
            continue
        if best is None or better(candidate, best, select_by):
            best = candidate
    return best


def comparison(candidates: Sequence[Candidate], select_by: str) -> str:
    """``wide_deep auc 0.7120 (gates passed), dcn auc 0.7031 (gates failed)``."""
    return ", ".join(
        f"{c.kind} v{c.version} {select_by} {_fmt(finite(c.metrics.get(select_by)))} "
        f"(gates {'passed' if c.gate.passed else 'failed'})"
        for c in candidates
    )
