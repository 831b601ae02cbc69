-- User attributes (grain: user), as Feast serves them: valid from the signup time on.
select
    user_id,
    segment as user_segment,
    age_bucket as user_age_bucket,
    region as user_region,
    signup_ts
from {{ ref('stg_users') }}
