"""Feature services: the versioned feature sets that models are trained and served with.

A model records the service name it was trained on; a change to a service's feature list is a
new service (``ctr_ranker_v2``), never an edit of a live one.

``ctr_ranker_v1`` carries a logging config: the scoring service (rankflow/serving/) writes what
it served through ``FeatureStore.write_logged_features`` into ``<state dir>/logs/ctr_ranker_v1/
features/`` (Feast's logging schema; the gap checks read it back). As with the export paths in
data_sources.py, rankflow points the destination at the state dir it applies
(``rankflow.features.store.load_definitions``) and the service binds the folder of the state dir
it serves; the path below is for the Feast CLI door.
"""

import os
from pathlib import Path

from feast import FeatureService
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination

if __package__:  # imported as the package feature_repo (rankflow.features.store)
    from . import features, on_demand_features
else:  # imported by `feast apply` as top-level modules of the repo folder
    import features
    import on_demand_features

# Read only for the Feast CLI door (as in data_sources.py): rankflow binds the logging
# destination to its own state dir (rankflow.serving.served_log) and never relies on it.
_HOME = os.environ.get("RANKFLOW_HOME")
LOG_ROOT = Path(_HOME).expanduser().resolve() / "logs" if _HOME else Path("logs")

ctr_ranker_v1 = FeatureService(
    name="ctr_ranker_v1",
    features=[
        features.user_attributes,
        # item_category is left out: the entity rows already carry the shown item's category.
        features.item_attributes[["item_price"]],
        features.user_daily_stats,
        features.item_daily_stats,
        features.user_category_affinity,
        on_demand_features.request_features,
    ],
    description="Wide & Deep / DCN click-through-rate ranker, feature set v1",
    logging_config=LoggingConfig(
        destination=FileLoggingDestination(path=str(LOG_ROOT / "ctr_ranker_v1" / "features"))
    ),
)
