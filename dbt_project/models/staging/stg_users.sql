-- Users: renamed to warehouse types, one row per user_id (the first in file order wins; the
-- source test on raw.users.user_id warns when the raw data repeats a key).
with source as (
    select * from {{ source('raw', 'users') }}
),

typed as (
    select
        cast(user_id as bigint) as user_id,
        cast(segment as varchar) as segment,
        cast(age_bucket as varchar) as age_bucket,
        cast(region as varchar) as region,
        {{ utc_timestamp("signup_ts") }} as signup_ts,
        filename as _source_file,
        file_row_number as _file_row_number
    from source
)

select *
from typed
qualify row_number() over (
    partition by user_id order by _source_file, _file_row_number
) = 1
