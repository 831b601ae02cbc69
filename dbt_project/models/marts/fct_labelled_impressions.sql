{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_date',
        on_schema_change='fail'
    )
}}
-- The valid impressions with their click label (grain: impression). This is the entity
-- dataframe Feast joins features onto, and the only input of the daily feature marts.
-- Incremental: re-inserts the days stg_impressions (re)loaded since this model last ran.
{%- set since = days_changed_since_last_load(ref('stg_impressions')) %}

with checked as (
    select * from {{ ref('int_impressions__checked') }}
    {%- if is_incremental() %}
    where {% if since is none %}false{% else %}event_date >= date '{{ since }}'{% endif %}
    {%- endif %}
)

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
