{{ config(materialized='view') }}
-- Feast source of user_daily_stats. created_ts is when the row was computed (its load time).
-- A view written to one parquet file per feature day by rankflow.warehouse.exports.
select
    user_id,
    timezone('UTC', feature_ts) as feature_ts,
    timezone('UTC', _loaded_at) as created_ts,
    user_impressions_1d,
    user_impressions_7d,
    user_impressions_28d,
    user_clicks_1d,
    user_clicks_7d,
    user_clicks_28d,
    user_ctr_7d,
    user_ctr_28d,
    user_days_since_last_click,
    feature_date as _export_day,
    _load_id
from {{ ref('user_daily_features') }}
