{{ config(materialized='day_partitioned', day_column='event_date') }}
-- Impressions renamed and typed, every raw row kept. Deduplication by event_id marks the copies
-- instead of dropping them (is_duplicate), so the quarantine can report them: over all days, the
-- first copy by ts, then by file and row order, is the one that counts.
--
-- Incremental: source('raw', 'impressions') holds only the partition days this build reloads
-- (see macros/incremental_windows.sql); the build's history holds every other day (those days
-- were not carried over: macros/day_partitioned.sql), and this writes the reloaded ones. The
-- build reloads days until no kept day shares an event_id with a reloaded one
-- (rankflow.warehouse.build._load), so ranking the reloaded rows among themselves gives each
-- the mark a full build would give it, and no kept row's mark changes.

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
