"""FileSources over the parquet exports that the dbt project writes.

Every export lives under ``<state dir>/exports/``. Two doors import this module:

- rankflow (``rankflow.features.store.apply_feature_repo``) imports the repo as the package
  ``feature_repo`` and points every FileSource at the exports of the state directory it was
  given (its :class:`~rankflow.settings.Settings`), whatever this module says;
- the Feast CLI (``RANKFLOW_HOME=$PWD/.state feast -c feature_repo apply``) imports the files as
  top-level modules; like ``${RANKFLOW_HOME}`` in ``feature_store.yaml``, which Feast expands
  from the environment, the paths below then come from ``RANKFLOW_HOME``.

Without ``RANKFLOW_HOME`` the paths are relative (``exports/<name>.parquet``, and
``exports/<name>/*.parquet`` for the per-day exports), which Feast resolves against the repo
config's ``repo_path``.

``feature_ts`` is the time a row became true (UTC midnight for the daily aggregates, which only
count events strictly before it); ``created_ts`` is when dbt built the row and only breaks ties
between rows with the same ``feature_ts``.
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

# Read only for the Feast CLI door, the same variable Feast's own ${RANKFLOW_HOME} expansion of
# feature_store.yaml reads; rankflow re-points the sources itself and never relies on it.
_HOME = os.environ.get("RANKFLOW_HOME")
EXPORTS_DIR = Path(_HOME).expanduser().resolve() / "exports" if _HOME else Path("exports")


def _export(name: str, description: str, per_day: bool = True) -> FileSource:
    # The daily exports are folders of one file per day (rankflow.warehouse.exports), read
    # through one glob; Feast's DuckDB offline store reads the glob as one table.
    return FileSource(
        name=f"{name}_source",
        path=str(EXPORTS_DIR / name / "*.parquet" if per_day else EXPORTS_DIR / f"{name}.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="feature_ts",
        created_timestamp_column="created_ts",
        description=description,
    )


user_attributes_source = _export(
    "user_attributes",
    "One row per user, stamped at signup (dbt export user_attributes)",
    per_day=False,
)
item_attributes_source = _export(
    "item_attributes",
    "One row per item, stamped at creation (dbt export item_attributes)",
    per_day=False,
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
