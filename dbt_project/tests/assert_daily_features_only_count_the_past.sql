-- The time rule, checked on the real build by an independent recount: for every user feature row
-- (user, D) written by this build, count the impressions with D - 28 days <= ts < D and
-- D - 1 day <= ts < D straight from event timestamps (no daily bucketing) and compare.
-- Any row returned is a feature that saw an event at or after its own timestamp, or missed one.
with features as (
    select user_id, feature_ts, user_impressions_1d, user_impressions_28d, user_clicks_28d
    from {{ ref('user_daily_features') }}
    where _load_id = '{{ invocation_id }}'
),

recount as (
    select
        features.user_id,
        features.feature_ts,
        count(*) filter (
            where impressions.event_timestamp >= features.feature_ts - interval 1 day
        ) as impressions_1d,
        count(*) as impressions_28d,
        coalesce(sum(impressions.label), 0) as clicks_28d
    from features
    join {{ ref('fct_labelled_impressions') }} as impressions
        on impressions.user_id = features.user_id
        and impressions.event_timestamp >= features.feature_ts - interval 28 day
        and impressions.event_timestamp < features.feature_ts
    group by all
)

select
    features.*,
    recount.impressions_1d as recounted_1d,
    recount.impressions_28d as recounted_28d,
    recount.clicks_28d as recounted_clicks_28d
from features
left join recount using (user_id, feature_ts)
where recount.impressions_28d is distinct from features.user_impressions_28d
    or recount.impressions_1d is distinct from features.user_impressions_1d
    or recount.clicks_28d is distinct from features.user_clicks_28d
