"""Where rankflow keeps its state: the fixed layout under one state directory.

Everything the pipeline generates (raw data, ground truth, the DuckDB warehouse, parquet
exports, the Feast registry and online store, MLflow and Prefect stores, logs, reports, locks)
lives under one git-ignored directory, :attr:`rankflow.settings.Settings.home`:
``$RANKFLOW_HOME`` if set, else ``.state/`` in the checkout. :class:`StatePaths` names every
folder of it; nothing else builds a path under the state directory by hand. This module imports
nothing of rankflow: :mod:`rankflow.settings` builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "StatePaths"]

# The checkout: configs/, dbt_project/, feature_repo/ and the default state dir live here.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StatePaths:
    """The fixed layout under the state directory (``root``); get one from ``Settings.paths``."""

    root: Path

    @property
    def raw(self) -> Path:
        """Raw data, when the pipeline writes it (``raw_dir`` may point elsewhere)."""
        return self.root / "raw"

    @property
    def built_with(self) -> Path:
        """What the state's data was built with (rankflow/built_with.py): the simulation and
        warehouse values, the commit, when; later commands are held to it."""
        return self.root / "built-with.json"

    @property
    def truth(self) -> Path:
        """The simulator's ground truth (true click probabilities)."""
        return self.root / "truth"

    @property
    def warehouse(self) -> Path:
        """The live DuckDB warehouse file."""
        return self.root / "warehouse" / "rankflow.duckdb"

    @property
    def exports(self) -> Path:
        """The live parquet exports the Feast sources read."""
        return self.root / "exports"

    @property
    def exports_scratch(self) -> Path:
        """Where a warehouse build writes its exports before they are swapped in."""
        return self.root / ".exports-build"

    @property
    def dbt(self) -> Path:
        """dbt's target folders (manifest, docs) and logs, kept out of the checkout."""
        return self.root / "dbt"

    @property
    def feast(self) -> Path:
        """The Feast registry and the SQLite online store."""
        return self.root / "feast"

    @property
    def mlflow(self) -> Path:
        """The embedded MLflow store (``mlflow.db``) and local server logs."""
        return self.root / "mlflow"

    @property
    def mlflow_artifacts(self) -> Path:
        """Run and model artifacts of the embedded MLflow store."""
        return self.mlflow / "artifacts"

    @property
    def prefect(self) -> Path:
        """Prefect's home (database, results) for runs without a Prefect server."""
        return self.root / "prefect"

    @property
    def runs(self) -> Path:
        """Per-run summaries and artifacts written by the pipeline."""
        return self.root / "runs"

    @property
    def training(self) -> Path:
        """Resumable training checkpoints, ``<kind>/<fingerprint>``."""
        return self.root / "training"

    @property
    def serving_models(self) -> Path:
        """Registered versions a scoring service downloaded (one folder per version)."""
        return self.root / "serving" / "models"

    @property
    def logs(self) -> Path:
        """What the scoring service served, ``<feature service>/features|scores|labels``."""
        return self.root / "logs"

    @property
    def reports(self) -> Path:
        """Gap-check reports, ``gap-check-<time>/``."""
        return self.root / "reports"

    @property
    def canary(self) -> Path:
        """Open live canary phases, one file per serving model."""
        return self.root / "canary"

    @property
    def soak(self) -> Path:
        """What a soak of the daily schedule writes (rankflow/sim/soak.py): its record, the
        service's output, the errors of its stages."""
        return self.root / "soak"

    @property
    def locks(self) -> Path:
        """Lock files of the resources one state dir shares (training, promotions)."""
        return self.root / "locks"
