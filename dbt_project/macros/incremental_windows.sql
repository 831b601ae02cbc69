{#- Which days an incremental run redoes. rankflow.warehouse.build decides it by the content of
    the raw files (rankflow.warehouse.changes) and hands it over as tables of the build database:
    _rankflow.reload_days (partition days to reload: added, rewritten, removed, the lookback,
    the days the future-timestamp rule may judge differently, and days sharing an event_id with
    any of those) and _rankflow.redo_feature_days (the feature days the daily marts redo). No
    date is pasted into SQL: models select from those tables.

    The day-grain models are day_partitioned (macros/day_partitioned.sql): the build's history
    folder holds the days it keeps, without the days it redoes (so a removed day disappears even
    though no row re-inserts it), and each model writes the rows of the days it redoes. -#}

{% macro reload_days() -%}
  {{ literal_days("select day from _rankflow.reload_days") }}
{%- endmacro %}


{% macro literal_days(query) -%}
  {#- The dates `query` returns (one date column), as a literal list: (date '2024-03-01', ...).
      A filter on a constant list reaches the parquet scans of the day-grain history and skips
      every other day's file; the same filter through a subquery is applied after the scan (and
      after the joins of int_impressions__checked), so a day would cost the whole history. The
      values are dates read from the build's own typed tables, rendered by isoformat(): digits
      and dashes only. -#}
  {%- if execute -%}
    {%- set days = run_query(query).columns[0].values() | list -%}
  {%- else -%}
    {%- set days = [] -%}
  {%- endif -%}
  {%- if days -%}
    ({% for day in days | sort %}date '{{ day.isoformat() }}'{{ ", " if not loop.last }}{% endfor %})
  {%- else -%}
    (cast(null as date))
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
      feeds (day + 1 .. day + max_feature_window), and the days between the previous and the
      new cutoff (rows that start or stop existing when the newest day moves).
      rankflow.warehouse.history computes them (feature_redo_days), because it must leave exactly
      these days out of the history it carries over; the model writes exactly these. -#}
  {{ check_feature_window(max_window) }}
  {{- literal_days("select feature_date from _rankflow.redo_feature_days") }}
{%- endmacro %}


{% macro changed_feature_source_days(max_window) -%}
  {#- The impression days the changed feature days read: D - max_window .. D - 1 for each. -#}
  {{ check_feature_window(max_window) }}
  {{- literal_days(
      "select distinct cast(feature_date - cast(k as integer) as date) "
      ~ "from _rankflow.redo_feature_days cross join range(1, " ~ (max_window + 1) ~ ") as offsets(k)"
  ) }}
{%- endmacro %}


{% macro check_feature_window(max_window) -%}
  {%- if max_window > var('max_feature_window') | int -%}
    {{ exceptions.raise_compiler_error("a feature window of " ~ max_window ~ " days is longer than var max_feature_window (" ~ var('max_feature_window') ~ "): raise the var, which decides the feature days an incremental build redoes") }}
  {%- endif -%}
{%- endmacro %}
