-- Every staged impression with the first rule it breaks (`reason`), or null when it is valid.
-- The order of the checks decides which reason a row that breaks several gets: a row without
-- its keys cannot be judged further, and a duplicate is reported as such even if it is also
-- otherwise broken. fct_labelled_impressions takes the valid rows, quarantined_impressions the rest.
with impressions as (
    select * from {{ ref('stg_impressions') }}
),

users as (
    select user_id from {{ ref('stg_users') }}
),

items as (
    select item_id, category, price from {{ ref('stg_items') }}
)

select
    impressions.*,
    items.category as item_category,
    items.price as item_price,
    case
        when impressions.event_id is null
            or impressions.request_id is null
            or impressions.ts is null
            or impressions.user_id is null
            or impressions.item_id is null
            then 'null_key'
        when impressions.is_duplicate then 'duplicate_event_id'
        when impressions.ts > {{ rankflow_as_of() }} then 'future_ts'
        -- a Hive partition must hold only its own UTC day (the contract check stops such runs;
        -- this keeps the warehouse right if it was skipped)
        when cast(impressions.ts as date) <> impressions.event_date then 'wrong_partition'
        when users.user_id is null then 'unknown_user'
        when items.item_id is null then 'unknown_item'
        when impressions.position is null or impressions.position not between 1 and 100
            then 'invalid_position'
        when impressions.clicked is null or impressions.clicked not in (0, 1)
            then 'invalid_clicked'
        when impressions.device is null
            or impressions.device not in ('mobile', 'desktop', 'tablet')
            then 'invalid_device'
        when items.price is null or items.price < 0 then 'negative_price'
    end as reason
from impressions
left join users on impressions.user_id = users.user_id
left join items on impressions.item_id = items.item_id
