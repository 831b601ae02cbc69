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

-- An incremental build materializes the reloaded days first: otherwise DuckDB applies the
-- day filter after the view's joins and the `reason` filter, i.e. after judging every row
-- of the history (0.5 s at 90 days, against 0.1 s; the cost of a day grew with the history).
with checked as {% if is_incremental() %}materialized {% endif %}(
    select * from {{ ref('int_impressions__checked') }}
    {%- if is_incremental() %}
    where event_date in {{ reload_days() }}
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
