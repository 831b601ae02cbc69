{#- Which days an incremental run reprocesses. Every incremental model deletes and re-inserts
    whole days (or feature days), so reprocessing a day twice is harmless; missing one is not. -#}

{% macro impressions_reload_start() -%}
  {#- First raw partition day stg_impressions reloads: the newest `lookback_days` days it already
      holds (late data may have rewritten them) and everything newer. None on a full build. -#}
  {%- if not execute or not is_incremental() -%}
    {{- return(none) -}}
  {%- endif -%}
  {%- set lookback = var('lookback_days') | int -%}
  {%- if lookback < 0 -%}
    {{ exceptions.raise_compiler_error("var lookback_days must be >= 0, got " ~ lookback) }}
  {%- endif -%}
  {%- set sql -%}
    select cast(max(event_date) - {{ lookback }} + 1 as varchar) from {{ this }}
  {%- endset -%}
  {{- return(run_query(sql).columns[0].values()[0]) -}}
{%- endmacro %}


{% macro days_changed_since_last_load(upstream, date_column='event_date') -%}
  {#- Earliest `date_column` among rows `upstream` wrote after this model's newest row was
      written, i.e. the days upstream (re)loaded since this model last ran. None when nothing
      changed. Comparing load times, not invocation ids, keeps this right even when upstream
      was built by an earlier dbt invocation than this model. -#}
  {%- if not execute or not is_incremental() -%}
    {{- return(none) -}}
  {%- endif -%}
  {%- set sql -%}
    select cast(min({{ date_column }}) as varchar)
    from {{ upstream }}
    where _loaded_at > (select coalesce(max(_loaded_at), timestamp '1970-01-01') from {{ this }})
  {%- endset -%}
  {{- return(run_query(sql).columns[0].values()[0]) -}}
{%- endmacro %}
