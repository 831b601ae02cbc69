{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_date',
        on_schema_change='fail'
    )
}}
-- Impressions that broke a row rule, with the rule (`reason`) and the row's fields as staged, so
-- a data owner can find and fix them. event_date is the raw partition day.
-- Incremental like fct_labelled_impressions: the days stg_impressions (re)loaded.
{%- set since = days_changed_since_last_load(ref('stg_impressions')) %}

with checked as (
    select * from {{ ref('int_impressions__checked') }}
    {%- if is_incremental() %}
    where {% if since is none %}false{% else %}event_date >= date '{{ since }}'{% endif %}
    {%- endif %}
)

select
    reason,
    event_date,
    event_id,
    request_id,
    ts,
    user_id,
    item_id,
    position,
    device,
    clicked,
    _source_file,
    _file_row_number,
    {{ rankflow_load_columns() }}
from checked
where reason is not null
