{#- Which days an incremental run redoes. rankflow.warehouse.build decides it by the content of
    the raw files (rankflow.warehouse.changes) and hands it over as tables of the build database:
    _rankflow.reload_days (partition days to reload: added, rewritten, removed, the lookback,
    the days the future-timestamp rule may judge differently, and days sharing an event_id with
    any of those) and _rankflow.previous_cutoff (the newest day the previous build's feature
    marts were cut at). No date is pasted into SQL: models select from those tables.

    Every incremental model first deletes the days it redoes (a pre-hook, so a removed day
    disappears even though no row re-inserts it) and then appends their rows. -#}

{% macro reload_days() -%}
  (select day from _rankflow.reload_days)
{%- endmacro %}


{% macro delete_redone_days(column='event_date') -%}
  {#- Pre-hook of a day-incremental model: drop the rows of every reloaded day. -#}
  {%- if is_incremental() -%}
    delete from {{ this }} where {{ column }} in {{ reload_days() }}
  {%- endif -%}
{%- endmacro %}


{% macro feature_cutoff() -%}
  {#- The newest raw partition day (valid rows or not) that is not after the build's "now":
      feature rows end the day after it. -#}
  (select max(event_date) from {{ ref('stg_impressions') }}
   where event_date <= cast({{ rankflow_as_of() }} as date))
{%- endmacro %}


{% macro changed_feature_days(max_window) -%}
  {#- Feature days whose rows may differ from the previous build: every day a reloaded day
      feeds (day + 1 .. day + max_window), and the days between the previous and the new
      cutoff (rows that start or stop existing when the newest day moves). -#}
  (
    select distinct cast(day + cast(k as integer) as date) as feature_date
    from {{ reload_days() }} as reloaded(day)
    cross join range(1, {{ max_window + 1 }}) as offsets(k)
    union
    select cast(unnest(generate_series(
        least(old_cutoff, new_cutoff) + 2, greatest(old_cutoff, new_cutoff) + 1, interval 1 day
    )) as date)
    from (
        select
            coalesce((select newest_day from _rankflow.previous_cutoff), new_cutoff) as old_cutoff,
            new_cutoff
        from (select {{ feature_cutoff() }} as new_cutoff)
    )
    where old_cutoff is not null and new_cutoff is not null
  )
{%- endmacro %}


{% macro delete_changed_feature_days(max_window) -%}
  {%- if is_incremental() -%}
    delete from {{ this }} where feature_date in (select feature_date from {{ changed_feature_days(max_window) }})
  {%- endif -%}
{%- endmacro %}
