"""Registry versions: one per trained candidate, tagged and described for the MLflow UI.

Every trained candidate is a version of its family's registered model
(``registry.model_names``: ``rankflow-wide-deep``, ``rankflow-dcn``), tagged with the fingerprint
of its inputs (data, config, code) so an identical re-run finds it instead of adding a
duplicate. The registry UI lists version tags and descriptions, not run metrics, so the
headline metrics and the gate verdict are written onto each version as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rankflow.registry.gates import KIND_TITLES, GateResult, finite

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

TAG_FINGERPRINT = "rankflow.fingerprint"
TAG_KIND = "rankflow.model_kind"
TAG_GATES = "rankflow.gates"
TAG_FAMILY_VERSION = "rankflow.family_version"
# Set by `rankflow rollback` on the version it removed from @champion (the reason); a canary
# does not re-propose that model unless canary.allow_rolled_back.
TAG_ROLLED_BACK = "rankflow.rolled_back"


# MLflow's SQL stores hold a version's description in VARCHAR(5000): Postgres and MySQL refuse a
# longer one (SQLite does not check), so the history a version accumulates must stay within it.
DESCRIPTION_LIMIT = 5000
# A history line's share: several decisions fit beside the model card; a longer note keeps its
# start (what happened) and its end (the run that has the rest).
NOTE_LIMIT = 800
HISTORY = "### History"
_DROPPED = re.compile(r"^_(\d+) earlier entr(?:y|ies) not shown", re.MULTILINE)


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
    text = with_note(mv.description or "", f"{now_utc()}: {note}")
    client.update_model_version(name, version, description=text)


def with_note(description: str, note: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``description`` with ``note`` appended to its history, in at most ``limit`` characters.

    A champion gathers a line from every canary run against it, so the history outgrows the
    store's column within months of weekly canaries. The oldest lines go first and a line says
    how many are not shown (the version's tags and the canary runs keep every decision); the
    text above the history (the model card) keeps at most half of ``limit``.
    """
    head, _, history = description.partition(HISTORY)
    head = _cut(head.strip(), limit // 2)
    found = _DROPPED.search(history)
    dropped = int(found.group(1)) if found else 0
    entries = [line for line in history.splitlines() if line.startswith("- ")]
    # room for the heading and the "not shown" line beside the card
    entries.append(_cut_middle(f"- {note}", min(NOTE_LIMIT, limit - len(head) - 100)))

    def render() -> str:
        shown = [f"_{dropped} earlier entries not shown (MLflow keeps {limit} characters)_"]
        return "\n".join([head, "", HISTORY, *(shown if dropped else []), *entries]).strip()

    text = render()
    while len(text) > limit and len(entries) > 1:
        entries.pop(0)
        dropped += 1
        text = render()
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    tail = min(100, limit // 4)
    return text[: limit - tail - 1] + "…" + text[-tail:]


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
        value = finite(metrics.get(key))
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
        value = finite(metrics.get(key))
        if value is not None:
            out[f"{prefix}{key}"] = f"{value:.4f}"
    return out
