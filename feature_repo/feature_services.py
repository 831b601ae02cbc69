"""Feature services: the versioned feature sets that models are trained and served with.

A model records the service name it was trained on; a change to a service's feature list is a
new service (``ctr_ranker_v2``), never an edit of a live one.
"""

from feast import FeatureService

if __package__:  # imported as the package feature_repo (rankflow.features.store)
    from . import features, on_demand_features
else:  # imported by `feast apply` as top-level modules of the repo folder
    import features
    import on_demand_features

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
)
