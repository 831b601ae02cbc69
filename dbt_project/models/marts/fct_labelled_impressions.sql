{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_redone_days('event_date') }}"
    )
}}
-- The valid impressions with their click label (grain: impression). This is the entity
-- dataframe Feast joins features onto, and the only input of the daily feature marts.
-- Incremental: the pre-hook deletes the days this build reloads; their rows are appended.

-- the rows of int_impressions__checked this build writes (macros/checked_impressions.sql)
with checked as {{ checked_impressions_to_load() }}

select
    event_id,
    request_id,
    ts as event_timestamp,
    event_date,
    user_id,
    item_id,
    item_category as category,
    position,
    device,
    cast(hour(ts) as integer) as hour_of_day,
    cast(isodow(ts) as integer) as day_of_week,
    clicked as label,
    {{ rankflow_load_columns() }}
from checked
where reason is null
