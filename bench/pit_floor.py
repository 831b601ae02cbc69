"""A hand-written point-in-time join over the Feast exports: the floor Feast is measured against.

For every labelled impression, each feature view contributes its newest source row stamped at
or before the impression (DuckDB ``ASOF JOIN``), dropped when older than the view's TTL - the
same semantics as ``get_historical_features``. The views, keys, TTLs and parquet paths are read
from the Feast registry, so the floor always joins exactly what the feature service joins.
Request-time features (the on-demand view) are row-wise arithmetic, not joins, and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import duckdb
import pandas as pd
from feast import FeatureStore


@dataclass(frozen=True)
class JoinedView:
    name: str
    path: str
    join_keys: list[str]
    timestamp_field: str
    features: list[str]
    ttl: timedelta | None


def service_views(store: FeatureStore, service: str) -> list[JoinedView]:
    """The batch feature views of a feature service, as the floor needs them."""
    views = {v.name: v for v in store.list_feature_views()}
    joined = []
    for projection in store.get_feature_service(service).feature_view_projections:
        view = views.get(projection.name)
        if view is None:  # on-demand view: computed per row, not joined
            continue
        ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
        joined.append(
            JoinedView(
                name=view.name,
                path=view.batch_source.path,
                join_keys=list(view.join_keys),
                timestamp_field=view.batch_source.timestamp_field,
                features=[f.name for f in projection.features],
                ttl=ttl,
            )
        )
    return joined


def asof_join(views: list[JoinedView], entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of ``entity_df`` (``event_timestamp`` + join keys) with every view."""
    con = duckdb.connect()
    try:
        con.register("entities", entity_df)
        select, joins = ["e.*"], []
        for i, view in enumerate(views):
            alias = f"f{i}"
            on = " AND ".join(f"e.{k} = {alias}.{k}" for k in view.join_keys)
            joins.append(
                f"ASOF LEFT JOIN read_parquet('{view.path}') {alias} "
                f"ON {on} AND e.event_timestamp >= {alias}.{view.timestamp_field}"
            )
            for column in view.features:
                if view.ttl is None:
                    select.append(f"{alias}.{column}")
                else:
                    seconds = int(view.ttl.total_seconds())
                    select.append(
                        f"CASE WHEN {alias}.{view.timestamp_field} >= e.event_timestamp "
                        f"- INTERVAL {seconds} SECOND THEN {alias}.{column} END AS {column}"
                    )
        return con.sql(f"SELECT {', '.join(select)} FROM entities e {' '.join(joins)}").df()
    finally:
        con.close()
