{{ config(materialized='view') }}
-- Feast source of item_daily_stats. created_ts is when the row was computed (its load time).
-- A view written to one parquet file per feature day by rankflow.warehouse.exports.
select
    item_id,
    timezone('UTC', feature_ts) as feature_ts,
    timezone('UTC', _loaded_at) as created_ts,
    item_impressions_1d,
    item_impressions_7d,
    item_impressions_28d,
    item_clicks_1d,
    item_clicks_7d,
    item_clicks_28d,
    item_ctr_7d,
    item_ctr_28d,
    feature_date as _export_day,
    _load_id
from {{ ref('item_daily_features') }}
