"""FileSources over the parquet exports that the dbt project writes.

Every export lives under ``$RANKFLOW_HOME/exports/`` (the state layout of ``rankflow.paths``), so
the absolute paths are resolved when Feast imports this module (``feast apply``) and stored in
the registry, which lives in the same state directory. ``rankflow.features.store`` imports this
module afresh for every apply, so one process can serve several state directories.

``feature_ts`` is the time a row became true (UTC midnight for the daily aggregates, which only
count events strictly before it); ``created_ts`` is when dbt built the row and only breaks ties
between rows with the same ``feature_ts``.
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

from rankflow.paths import STATE_ENV_VAR, StatePaths


def _exports_dir() -> Path:
    # feature_store.yaml resolves ${RANKFLOW_HOME} through Feast's env expansion; an unset
    # variable would leave a literal "${RANKFLOW_HOME}" path there, so refuse early and loudly.
    root = os.environ.get(STATE_ENV_VAR)
    if not root:
        raise RuntimeError(
            f"feature_repo/data_sources.py: {STATE_ENV_VAR} is not set. The registry, online "
            f"store and parquet exports all live under it; run e.g. "
            f"`{STATE_ENV_VAR}=$PWD/.state feast -c feature_repo apply`."
        )
    return StatePaths(Path(root).expanduser().resolve()).exports


EXPORTS_DIR = _exports_dir()


def _export(name: str, description: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str(EXPORTS_DIR / f"{name}.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="feature_ts",
        created_timestamp_column="created_ts",
        description=description,
    )


user_attributes_source = _export(
    "user_attributes", "One row per user, stamped at signup (dbt export user_attributes)"
)
item_attributes_source = _export(
    "item_attributes", "One row per item, stamped at creation (dbt export item_attributes)"
)
user_daily_features_source = _export(
    "user_daily_features",
    "Per user and UTC day D, aggregates of impressions strictly before D 00:00",
)
item_daily_features_source = _export(
    "item_daily_features",
    "Per item and UTC day D, aggregates of impressions strictly before D 00:00",
)
user_category_daily_features_source = _export(
    "user_category_daily_features",
    "Per user, category and UTC day D, 28-day aggregates strictly before D 00:00",
)
