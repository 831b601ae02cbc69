{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_changed_feature_days(28) }}"
    )
}}
-- Grain: user_id, category x feature day. Computed only from impressions strictly
-- before feature_ts; see macros/daily_window_features.sql for how and for the incremental rule.
{{ daily_window_features(
    keys=['user_id', 'category'],
    prefix='uc',
    windows=[28],
    ctr_windows=[28],
    with_recency=false
) }}
