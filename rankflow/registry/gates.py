"""The MLflow model registry as rankflow uses it: versions, quality gates, aliases and their reasons.

- Every trained candidate is a version of its family's registered model
  (``registry.model_names``: ``rankflow-wide-deep``, ``rankflow-dcn``), tagged with the
  fingerprint of its inputs (data, config, code) so an identical re-run finds it instead of
  adding a duplicate.
- The serving model (``registry.serving_model``, default ``rankflow-ctr``) holds the aliases a
  scoring service resolves: ``champion``, ``challenger``, ``previous``. Both families can be
  versions of it, so moving ``champion`` from a Wide & Deep to a DCN version is one alias write.
- Absolute quality gates (``registry.gates`` in YAML) decide whether a candidate may become
  champion at all; a failing gate moves no alias.
- Every alias move records why: a ``rankflow.alias.<alias>.reason`` tag on the version and a
  line in its description, both shown by the MLflow UI.

Alias writes are ordered so that a crash between two of them never leaves ``champion`` unset
or pointing at a model that was not chosen: :func:`promote_champion` sets ``previous`` first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from rankflow.config import QualityGates

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES: tuple[str, ...] = (CHAMPION, CHALLENGER, PREVIOUS)

TAG_FINGERPRINT = "rankflow.fingerprint"
TAG_KIND = "rankflow.model_kind"
TAG_GATES = "rankflow.gates"
TAG_FAMILY_VERSION = "rankflow.family_version"

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


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_gates(metrics: Mapping[str, float], gates: QualityGates) -> GateResult:
    """Check test-split ``metrics`` (``evaluate``'s keys) against the absolute gates.

    A gate whose metric is missing or not finite fails: an unmeasured model is not promoted.
    """
    checks: dict[str, str] = {}
    failures: list[str] = []

    def check(name: str, ok: bool | None, text: str) -> None:
        verdict = "pass" if ok else "FAIL"
        checks[name] = f"{verdict}: {text}"
        if not ok:
            failures.append(f"{name}: {text}")

    auc = _finite(metrics.get("auc"))
    if gates.min_auc is not None:
        check(
            "min_auc",
            auc is not None and auc >= gates.min_auc,
            f"AUC {_fmt(auc)} >= {gates.min_auc}",
        )
    if gates.max_ne is not None:
        ne = _finite(metrics.get("ne"))
        check("max_ne", ne is not None and ne <= gates.max_ne, f"NE {_fmt(ne)} <= {gates.max_ne}")
    if gates.max_ece is not None:
        ece = _finite(metrics.get("ece"))
        check(
            "max_ece",
            ece is not None and ece <= gates.max_ece,
            f"ECE {_fmt(ece)} <= {gates.max_ece}",
        )
    if gates.calibration_ratio is not None:
        low, high = gates.calibration_ratio
        ratio = _finite(metrics.get("calibration_ratio"))
        check(
            "calibration_ratio",
            ratio is not None and low <= ratio <= high,
            f"calibration ratio {_fmt(ratio)} in [{low}, {high}]",
        )
    if gates.min_auc_lift_over_baseline is not None:
        base = _finite(metrics.get("baseline_auc"))
        lift = None if auc is None or base is None else auc - base
        check(
            "min_auc_lift_over_baseline",
            lift is not None and lift >= gates.min_auc_lift_over_baseline,
            f"AUC {_fmt(auc)} - baseline {_fmt(base)} = {_fmt(lift)} "
            f">= {gates.min_auc_lift_over_baseline}",
        )
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
    va = _finite(a.metrics.get(select_by))
    vb = _finite(b.metrics.get(select_by))
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
        f"{c.kind} v{c.version} {select_by} {_fmt(_finite(c.metrics.get(select_by)))} "
        f"(gates {'passed' if c.gate.passed else 'failed'})"
        for c in candidates
    )


# --------------------------------------------------------------------------------------------
# Registry operations
# --------------------------------------------------------------------------------------------


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_registered_model(
    client: MlflowClient, name: str, description: str, tags: Mapping[str, str] | None = None
) -> None:
    """Create the registered model if it does not exist (a concurrent create is fine)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error.error_code):
            raise
    try:
        client.create_registered_model(name, tags=dict(tags or {}), description=description)
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first (empty if the model does not exist)."""
    escaped = name.replace("'", "\\'")
    found = list(client.search_model_versions(filter_string=f"name = '{escaped}'"))
    return sorted(found, key=lambda mv: int(mv.version))


def find_version(client: MlflowClient, name: str, fingerprint: str) -> ModelVersion | None:
    """The oldest version of ``name`` tagged with ``fingerprint``, if any."""
    for mv in versions(client, name):
        if mv.tags.get(TAG_FINGERPRINT) == fingerprint:
            return mv
    return None


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points at, or None (no such alias or model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code) or "not found" in str(error).lower():
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


def register_version(
    client: MlflowClient,
    name: str,
    *,
    source: str,
    run_id: str | None,
    model_id: str | None,
    fingerprint: str,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """A new version of ``name``, unless one with ``fingerprint`` exists (then that one).

    The fingerprint tag is written in the same call that creates the version, so no version
    without it can appear.
    """
    existing = find_version(client, name, fingerprint)
    if existing is not None:
        return existing
    all_tags = {**dict(tags or {}), TAG_FINGERPRINT: fingerprint}
    return client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags=all_tags,
        description=description,
        model_id=model_id,
    )


def record_note(client: MlflowClient, name: str, version: str, note: str) -> None:
    """Append a dated line to the version's description (the UI shows it on the version page)."""
    mv = client.get_model_version(name, version)
    text = (mv.description or "").rstrip()
    if "### History" not in text:
        text += "\n\n### History"
    text += f"\n- {now_utc()}: {note}"
    client.update_model_version(name, version, description=text.strip())


def set_alias(client: MlflowClient, name: str, alias: str, version: str, reason: str) -> None:
    """Point ``alias`` at ``version`` and record why on the version (tags + description)."""
    client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), f"rankflow.alias.{alias}.reason", reason)
    client.set_model_version_tag(name, str(version), f"rankflow.alias.{alias}.set_at", now_utc())
    record_note(client, name, str(version), f"became @{alias}: {reason}")


def promote_champion(
    client: MlflowClient, name: str, version: str, reason: str
) -> ModelVersion | None:
    """Make ``version`` the champion; the old champion (if another) becomes ``previous``.

    ``previous`` is written before ``champion``: a crash between the two leaves the old
    champion in place (and also marked previous), never no champion. Returns the old one.
    """
    old = alias_version(client, name, CHAMPION)
    if old is not None and str(old.version) == str(version):
        return None
    if old is not None:
        set_alias(client, name, PREVIOUS, str(old.version), f"replaced as champion by v{version}")
    set_alias(client, name, CHAMPION, str(version), reason)
    if old is not None:
        record_note(client, name, str(old.version), f"left @champion for v{version}: {reason}")
    return old


# --------------------------------------------------------------------------------------------
# Text the UI shows
# --------------------------------------------------------------------------------------------

_SHOWN_METRICS = (
    ("auc", "AUC"),
    ("logloss", "logloss"),
    ("ne", "NE"),
    ("ece", "ECE"),
    ("calibration_ratio", "calibration ratio"),
    ("baseline_auc", "LR baseline AUC"),
    ("oracle_auc", "oracle AUC"),
    ("gap_closed_auc", "share of the baseline-to-oracle AUC gap closed"),
)


def metric_lines(metrics: Mapping[str, float]) -> list[str]:
    lines = []
    for key, label in _SHOWN_METRICS:
        value = _finite(metrics.get(key))
        if value is not None:
            lines.append(f"- {label}: {value:.4f}")
    return lines


def version_description(
    kind: str,
    metrics: Mapping[str, float],
    gate: GateResult,
    *,
    data_window: str,
    feature_service: str,
    fingerprint: str,
    run_id: str | None,
    test_window: str | None = None,
) -> str:
    """Markdown: what the model is, its test metrics, its gates, where it came from."""
    title = KIND_TITLES.get(kind, kind)
    lines = [
        f"**{title}** click-through-rate model (rankflow), features from feature service "
        f"`{feature_service}`, data window {data_window}.",
        "",
        f"Test metrics{f' ({test_window})' if test_window else ''}:",
        *metric_lines(metrics),
        "",
        f"Quality gates: {gate.summary()}.",
        "",
        f"Run `{run_id}`; input fingerprint `{fingerprint}` (data + config + code).",
    ]
    return "\n".join(lines)


def metric_tags(metrics: Mapping[str, float], prefix: str = "test_") -> dict[str, str]:
    """The headline metrics as version tags (the registry UI lists tags, not run metrics)."""
    out = {}
    for key, _ in _SHOWN_METRICS:
        value = _finite(metrics.get(key))
        if value is not None:
            out[f"{prefix}{key}"] = f"{value:.4f}"
    return out


@dataclass
class AliasState:
    """Where the serving model's aliases point (for reports)."""

    name: str
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, client: MlflowClient, name: str) -> AliasState:
        return cls(name, aliases_of(client, name))

    def uri(self, alias: str = CHAMPION) -> str:
        return f"models:/{self.name}@{alias}"
