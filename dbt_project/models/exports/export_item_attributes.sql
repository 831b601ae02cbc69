{{ config(location=export_location('item_attributes')) }}
-- Feast source of the item_attributes view: an item's attributes hold from its creation on.
select
    item_id,
    item_category,
    item_price,
    timezone('UTC', created_ts) as feature_ts,
    timezone('UTC', {{ rankflow_loaded_at() }}) as created_ts
from {{ ref('dim_items') }}
order by item_id
