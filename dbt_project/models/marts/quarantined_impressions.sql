{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook="{{ delete_redone_days('event_date') }}"
    )
}}
-- Impressions that broke a row rule, with the rule (`reason`) and the row's fields as staged, so
-- a data owner can find and fix them. event_date is the raw partition day.
-- Incremental like fct_labelled_impressions: a reloaded day leaves the quarantine and is
-- judged again, so the quarantine always describes the raw data of this build.

-- the rows of int_impressions__checked this build writes (macros/checked_impressions.sql)
with checked as {{ checked_impressions_to_load() }}

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
