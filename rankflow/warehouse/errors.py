"""The errors of a warehouse build or of the docs built from it."""

from __future__ import annotations

from rankflow.errors import RankflowError
from rankflow.warehouse.dbt_runner import NodeFailure


class WarehouseError(RankflowError, RuntimeError):
    """A warehouse operation (build or docs) that did not complete."""


class WarehouseBuildError(WarehouseError):
    """``dbt build`` failed; the live warehouse and exports were left untouched."""

    def __init__(self, message: str, failures: list[NodeFailure] | None = None) -> None:
        super().__init__(message)
        self.failures: list[NodeFailure] = failures or []
