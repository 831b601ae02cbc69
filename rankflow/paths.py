"""Where rankflow keeps its state: the fixed layout under one state directory.

Everything the pipeline generates (raw data, ground truth, the DuckDB warehouse, parquet
exports, the Feast registry and online store, MLflow and Prefect stores) lives under one
git-ignored directory, :attr:`rankflow.settings.Settings.home`: ``$RANKFLOW_HOME`` if set, else
``.state/`` in the checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rankflow.settings import REPO_ROOT

__all__ = ["REPO_ROOT", "StatePaths"]


@dataclass(frozen=True)
class StatePaths:
    """The fixed layout under the state directory."""

    root: Path

    @classmethod
    def default(cls) -> StatePaths:
        """The layout under the resolved settings' state dir (created on first use)."""
        from rankflow.settings import Settings

        root = Settings.resolve().home
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse" / "rankflow.duckdb"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"

    @property
    def runs(self) -> Path:
        """Per-run summaries and artifacts written by the pipeline."""
        return self.root / "runs"
