{{ config(location=export_location('user_daily_features')) }}
-- Feast source of user_daily_stats. created_ts is when the row was computed (its load time).
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
    user_days_since_last_click
from {{ ref('user_daily_features') }}
order by feature_ts, user_id
