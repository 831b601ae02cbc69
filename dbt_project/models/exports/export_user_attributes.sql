{{ config(location=export_location('user_attributes')) }}
-- Feast source of the user_attributes view: a user's attributes hold from signup on.
select
    user_id,
    user_segment,
    user_age_bucket,
    user_region,
    timezone('UTC', signup_ts) as feature_ts,
    timezone('UTC', {{ rankflow_loaded_at() }}) as created_ts
from {{ ref('dim_users') }}
order by user_id
