{{ config(location=export_location('labelled_impressions')) }}
-- Feast's entity dataframe source (grain: impression). Timestamps are written as UTC
-- TIMESTAMPTZ so no reader has to guess a zone.
select
    event_id,
    timezone('UTC', event_timestamp) as event_timestamp,
    event_date,
    user_id,
    item_id,
    category,
    position,
    device,
    hour_of_day,
    day_of_week,
    label
from {{ ref('fct_labelled_impressions') }}
order by event_timestamp, event_id
