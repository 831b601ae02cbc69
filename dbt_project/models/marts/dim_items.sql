-- Item attributes (grain: item), valid from the item's creation time on. Items with an
-- impossible price are left out; their impressions are quarantined as negative_price.
select
    item_id,
    category as item_category,
    price as item_price,
    created_ts
from {{ ref('stg_items') }}
where price >= 0
