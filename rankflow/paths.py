"""Where rankflow keeps its state.

Everything the pipeline generates (raw data, ground truth, the DuckDB warehouse, parquet
exports, the Feast registry and online store, MLflow and Prefect stores) lives under one
git-ignored directory: ``$RANKFLOW_HOME`` if set, else ``.state/`` in the checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_ENV_VAR = "RANKFLOW_HOME"


def state_dir() -> Path:
    """The root of all generated state, created on first use."""
    root = Path(os.environ.get(STATE_ENV_VAR) or REPO_ROOT / ".state").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class StatePaths:
    """The fixed layout under the state directory."""

    root: Path

    @classmethod
    def default(cls) -> StatePaths:
        return cls(state_dir())

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
