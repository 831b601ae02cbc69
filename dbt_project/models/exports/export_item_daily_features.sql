{{ config(location=export_location('item_daily_features')) }}
-- Feast source of item_daily_stats. created_ts is when the row was computed (its load time).
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
    item_ctr_28d
from {{ ref('item_daily_features') }}
order by feature_ts, item_id
