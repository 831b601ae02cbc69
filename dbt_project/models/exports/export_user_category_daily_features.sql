{{ config(location=export_location('user_category_daily_features')) }}
-- Feast source of user_category_affinity. created_ts is when the row was computed.
select
    user_id,
    category,
    timezone('UTC', feature_ts) as feature_ts,
    timezone('UTC', _loaded_at) as created_ts,
    uc_impressions_28d,
    uc_clicks_28d,
    uc_ctr_28d
from {{ ref('user_category_daily_features') }}
order by feature_ts, user_id, category
