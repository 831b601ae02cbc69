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

-- An incremental build materializes the reloaded days first: otherwise DuckDB applies the
-- day filter after the view's joins and the `reason` filter, i.e. after judging every row
-- of the history (0.5 s at 90 days, against 0.1 s; the cost of a day grew with the history).
with checked as {% if is_incremental() %}materialized {% endif %}(
    select * from {{ ref('int_impressions__checked') }}
    {%- if is_incremental() %}
    where event_date in {{ reload_days() }}
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
