{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_redone_days('event_date') }}"
    )
}}
-- Impressions renamed and typed, every raw row kept. Deduplication by event_id marks the copies
-- instead of dropping them (is_duplicate), so the quarantine can report them: over all days, the
-- first copy by ts, then by file and row order, is the one that counts.
--
-- Incremental: source('raw', 'impressions') holds only the partition days this build reloads
-- (see macros/incremental_windows.sql); the pre-hook has deleted those days, this appends them.
-- The build reloads every day that shares an event_id with a changed day, so ranking the
-- reloaded rows together with the kept rows of the same event ids gives each reloaded row the
-- mark a full build would give it, and no kept row's mark changes.

with source as (
    select * from {{ source('raw', 'impressions') }}
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
        file_row_number as _file_row_number,
        true as _reloaded
    from source
),

candidates as (
    select * from typed
    {%- if is_incremental() %}
    union all by name
    -- copies of the same events on days this build keeps as they are
    select event_id, ts, _source_file, _file_row_number, false as _reloaded
    from {{ this }}
    where event_id in (select event_id from typed where event_id is not null)
    {%- endif %}
),

ranked as (
    select
        *,
        row_number() over (
            partition by event_id order by ts nulls last, _source_file, _file_row_number
        ) as _occurrence
    from candidates
)

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
    coalesce(event_id is not null and _occurrence > 1, false) as is_duplicate,
    _source_file,
    _file_row_number,
    {{ rankflow_load_columns() }}
from ranked
where _reloaded
