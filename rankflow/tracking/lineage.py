"""Lineage: tags that say where a run's model came from (code, warehouse build, features, data).

Read-only probes of the checkout (git), the dbt manifest, the Feast project and the
simulator's seed; each is optional and missing ones are left out rather than guessed.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from rankflow.paths import REPO_ROOT, StatePaths

if TYPE_CHECKING:
    from rankflow.features.training_set import TrainingSet

# Tag keys (MLflow shows tags as they are spelt; keep the ``rankflow.`` prefix for ours).
TAG_GIT_SHA = "rankflow.git_sha"
TAG_GIT_DIRTY = "rankflow.git_dirty"
TAG_DBT_MANIFEST = "rankflow.dbt_manifest_sha256"
TAG_FEAST_PROJECT = "rankflow.feast_project"
TAG_FEATURE_SERVICE = "rankflow.feature_service"
TAG_DATA_WINDOW = "rankflow.data_window"
TAG_SIMULATOR_SEED = "rankflow.simulator_seed"


def _git(*args: str) -> str | None:
    # Read-only: --no-optional-locks keeps `git status` from refreshing the index file.
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_sha() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout."""
    return _git("rev-parse", "HEAD")


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD (None outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def dbt_manifest_path(paths: StatePaths) -> Path | None:
    """The manifest of the warehouse build: the state dir's, else ``dbt_project/target``'s."""
    for candidate in (
        paths.dbt / "target" / "manifest.json",
        REPO_ROOT / "dbt_project" / "target" / "manifest.json",
    ):
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def feast_project(repo_path: Path | None = None) -> str | None:
    """The ``project:`` of ``feature_repo/feature_store.yaml`` (read without importing Feast)."""
    file = (repo_path or REPO_ROOT / "feature_repo") / "feature_store.yaml"
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    project = data.get("project") if isinstance(data, dict) else None
    return str(project) if project else None


def simulator_seed(source: str, paths: StatePaths) -> int | None:
    """The seed of the simulated data in use (``truth/simulation.json``); None for own data
    (``source: raw``) or when the simulator left no record."""
    if source != "simulate":
        return None
    file = paths.truth / "simulation.json"
    if file.is_file():
        import json

        with contextlib.suppress(ValueError, OSError):
            seed = json.loads(file.read_text()).get("seed")
            if seed is not None:
                return int(seed)
    return None


def lineage_tags(source: str, paths: StatePaths, training_set: TrainingSet) -> dict[str, str]:
    """Tags that say where a run's model came from: code, warehouse build, features, data
    (``source``: the config's ``source``, simulate or raw)."""
    tags: dict[str, str] = {
        TAG_FEATURE_SERVICE: training_set.feature_service,
        TAG_DATA_WINDOW: str(training_set.window),
        "rankflow.data_source": source,
    }
    for split, window in training_set.split_windows.items():
        tags[f"rankflow.window.{split}"] = str(window)
    sha = git_sha()
    if sha:
        tags[TAG_GIT_SHA] = sha
        tags["mlflow.source.git.commit"] = sha
        dirty = git_dirty()
        if dirty is not None:
            tags[TAG_GIT_DIRTY] = str(dirty).lower()
    manifest = dbt_manifest_path(paths)
    if manifest is not None:
        tags[TAG_DBT_MANIFEST] = file_sha256(manifest)
        tags["rankflow.dbt_manifest_path"] = str(manifest)
    project = feast_project()
    if project:
        tags[TAG_FEAST_PROJECT] = project
    seed = simulator_seed(source, paths)
    if seed is not None:
        tags[TAG_SIMULATOR_SEED] = str(seed)
    return tags
