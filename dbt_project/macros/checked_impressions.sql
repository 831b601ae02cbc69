{% macro checked_impressions_to_load() -%}
{#-
  The rows of int_impressions__checked this build (re)writes, as the body of a CTE:
  `with checked as {{ checked_impressions_to_load() }}`. The two day-incremental marts split
  them: fct_labelled_impressions keeps the valid rows (reason is null), quarantined_impressions
  the others, so both read exactly the same rows. A full build reads every day; an incremental
  one the reloaded days (_rankflow.reload_days), which each model's pre-hook deleted first.

  An incremental build materializes the reloaded days first: otherwise DuckDB applies the
  day filter after the view's joins and the `reason` filter, i.e. after judging every row
  of the history (0.5 s at 90 days, against 0.1 s; the cost of a day grew with the history).
-#}
{%- if is_incremental() %}materialized {% endif -%}
(
    select * from {{ ref('int_impressions__checked') }}
    {%- if is_incremental() %}
    where event_date in {{ reload_days() }}
    {%- endif %}
)
{%- endmacro %}
