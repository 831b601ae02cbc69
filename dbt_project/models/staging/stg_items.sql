-- Items: renamed to warehouse types, one row per item_id (the first in file order wins).
-- A negative price is kept here and judged in int_impressions__checked.
with source as (
    select * from {{ source('raw', 'items') }}
),

typed as (
    select
        cast(item_id as bigint) as item_id,
        cast(category as varchar) as category,
        cast(price as double) as price,
        {{ utc_timestamp("created_ts") }} as created_ts,
        filename as _source_file,
        file_row_number as _file_row_number
    from source
)

select *
from typed
qualify row_number() over (
    partition by item_id order by _source_file, _file_row_number
) = 1
