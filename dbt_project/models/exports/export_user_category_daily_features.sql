{{ config(materialized='view') }}
-- Feast source of user_category_affinity. created_ts is when the row was computed.
-- A view written to one parquet file per feature day by rankflow.warehouse.exports.
select
    user_id,
    category,
    timezone('UTC', feature_ts) as feature_ts,
    timezone('UTC', _loaded_at) as created_ts,
    uc_impressions_28d,
    uc_clicks_28d,
    uc_ctr_28d,
    feature_date as _export_day,
    _load_id
from {{ ref('user_category_daily_features') }}
