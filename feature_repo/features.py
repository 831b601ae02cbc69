"""Batch feature views over the dbt exports.

TTL is how far back a point-in-time join may look from an impression for a row of the view:
- the daily views get one day: dbt writes a row stamped at every UTC midnight while the entity
  was active in the last 28 days, so an impression on day D always finds its D 00:00 row, and an
  entity with no row for D (new, or inactive for 28 days) gets nulls instead of a stale row;
- the attribute views get ``timedelta(0)``, Feast's "never expires": a user's signup attributes
  stay valid however long ago the signup was.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64, String

if __package__:  # imported as the package feature_repo (rankflow.features.store)
    from . import data_sources, entities
else:  # imported by `feast apply` as top-level modules of the repo folder
    import data_sources
    import entities

DAILY_TTL = timedelta(days=1)
NO_TTL = timedelta(0)

user_attributes = FeatureView(
    name="user_attributes",
    entities=[entities.user],
    ttl=NO_TTL,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="user_segment", dtype=String),
        Field(name="user_age_bucket", dtype=String, description="Null when unknown"),
        Field(name="user_region", dtype=String, description="Null when unknown"),
    ],
    source=data_sources.user_attributes_source,
    online=True,
    description="Profile attributes known since signup",
)

item_attributes = FeatureView(
    name="item_attributes",
    entities=[entities.item],
    ttl=NO_TTL,
    schema=[
        Field(name="item_id", dtype=Int64),
        Field(name="item_category", dtype=String),
        Field(name="item_price", dtype=Float64),
    ],
    source=data_sources.item_attributes_source,
    online=True,
    description="Catalogue attributes known since the item was created",
)

_WINDOWS = ("1d", "7d", "28d")

user_daily_stats = FeatureView(
    name="user_daily_stats",
    entities=[entities.user],
    ttl=DAILY_TTL,
    schema=[
        Field(name="user_id", dtype=Int64),
        *(Field(name=f"user_impressions_{w}", dtype=Int64) for w in _WINDOWS),
        *(Field(name=f"user_clicks_{w}", dtype=Int64) for w in _WINDOWS),
        Field(name="user_ctr_7d", dtype=Float64, description="Smoothed toward the CTR prior"),
        Field(name="user_ctr_28d", dtype=Float64, description="Smoothed toward the CTR prior"),
        Field(
            name="user_days_since_last_click",
            dtype=Float64,
            description="Null when the user has not clicked in the last 28 days",
        ),
    ],
    source=data_sources.user_daily_features_source,
    online=True,
    description="User activity before each UTC midnight",
)

item_daily_stats = FeatureView(
    name="item_daily_stats",
    entities=[entities.item],
    ttl=DAILY_TTL,
    schema=[
        Field(name="item_id", dtype=Int64),
        *(Field(name=f"item_impressions_{w}", dtype=Int64) for w in _WINDOWS),
        *(Field(name=f"item_clicks_{w}", dtype=Int64) for w in _WINDOWS),
        Field(name="item_ctr_7d", dtype=Float64, description="Smoothed toward the CTR prior"),
        Field(name="item_ctr_28d", dtype=Float64, description="Smoothed toward the CTR prior"),
    ],
    source=data_sources.item_daily_features_source,
    online=True,
    description="Item popularity before each UTC midnight",
)

user_category_affinity = FeatureView(
    name="user_category_affinity",
    entities=[entities.user, entities.category],
    ttl=DAILY_TTL,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="category", dtype=String),
        Field(name="uc_impressions_28d", dtype=Int64),
        Field(name="uc_clicks_28d", dtype=Int64),
        Field(name="uc_ctr_28d", dtype=Float64, description="Smoothed toward the CTR prior"),
    ],
    source=data_sources.user_category_daily_features_source,
    online=True,
    description="How much a user engaged with a category in the 28 days before each midnight",
)
