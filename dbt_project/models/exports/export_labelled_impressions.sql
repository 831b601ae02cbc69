{{ config(materialized='view') }}
-- Feast's entity dataframe source (grain: impression). Timestamps are written as UTC
-- TIMESTAMPTZ so no reader has to guess a zone. A view: rankflow.warehouse.exports writes it to
-- one parquet file per event_date (_export_day), rewriting only the days this build redid
-- (_load_id); neither column is written to the files.
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
    label,
    event_date as _export_day,
    _load_id
from {{ ref('fct_labelled_impressions') }}
