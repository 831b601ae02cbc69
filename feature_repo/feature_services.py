"""Feature services: the versioned feature sets that models are trained and served with.

A model records the service name it was trained on; a change to a service's feature list is a
new service (``ctr_ranker_v2``), never an edit of a live one.
"""

from feast import FeatureService
from features import (
    item_attributes,
    item_daily_stats,
    user_attributes,
    user_category_affinity,
    user_daily_stats,
)
from on_demand_features import request_features

ctr_ranker_v1 = FeatureService(
    name="ctr_ranker_v1",
    features=[
        user_attributes,
        # item_category is left out: the entity rows already carry the shown item's category.
        item_attributes[["item_price"]],
        user_daily_stats,
        item_daily_stats,
        user_category_affinity,
        request_features,
    ],
    description="Wide & Deep / DCN click-through-rate ranker, feature set v1",
)
