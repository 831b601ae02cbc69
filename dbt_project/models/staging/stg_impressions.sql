{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_date',
        on_schema_change='fail'
    )
}}
-- Impressions renamed and typed, every raw row kept. Deduplication by event_id marks the copies
-- instead of dropping them (is_duplicate), so the quarantine can report them: the first copy by
-- ts, then by file and row order, is the one that counts; a copy of an event_id already loaded
-- on an earlier day is always a duplicate.
--
-- Incremental: reloads whole partition days from impressions_reload_start() on (the newest
-- `lookback_days` loaded days and every newer day) with delete+insert by event_date. The start
-- day is a literal, so DuckDB prunes the Hive partitions before reading any file.
{%- set reload_start = impressions_reload_start() %}

with source as (
    select * from {{ source('raw', 'impressions') }}
    {%- if reload_start is not none %}
    where event_date >= date '{{ reload_start }}'
    {%- endif %}
),

typed as (
    select
        cast(event_id as varchar) as event_id,
        cast(request_id as varchar) as request_id,
        {{ utc_timestamp("ts") }} as ts,
        cast(user_id as bigint) as user_id,
        cast(item_id as bigint) as item_id,
        cast(position as integer) as position,
        cast(device as varchar) as device,
        -- the contract allows int8 or boolean; both become 0 / 1 (anything else is quarantined)
        cast(clicked as integer) as clicked,
        cast(event_date as date) as event_date,
        filename as _source_file,
        file_row_number as _file_row_number
    from source
),

ranked as (
    select
        *,
        row_number() over (
            partition by event_id order by ts nulls last, _source_file, _file_row_number
        ) as _occurrence
    from typed
)

{%- if reload_start is not none %},

loaded_before as (
    -- event ids that already count from days this run does not reload
    select distinct event_id
    from {{ this }}
    where event_date < date '{{ reload_start }}' and event_id is not null and not is_duplicate
)
{%- endif %}

select
    event_id,
    request_id,
    ts,
    user_id,
    item_id,
    position,
    device,
    clicked,
    event_date,
    coalesce(
        event_id is not null and (
            _occurrence > 1
            {%- if reload_start is not none %}
            or event_id in (select event_id from loaded_before)
            {%- endif %}
        ),
        false
    ) as is_duplicate,
    _source_file,
    _file_row_number,
    {{ rankflow_load_columns() }}
from ranked
