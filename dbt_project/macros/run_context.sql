{#- Values fixed for one dbt invocation, so every model of a build agrees on them. -#}

{% macro rankflow_as_of() -%}
  {#- "Now" for the future-timestamp rule, as a naive UTC timestamp. rankflow.warehouse.build
      writes it to _rankflow.build_clock (a table, not a var: a var that changes every build
      would make dbt re-parse the whole project every build). The var, when set, wins: unit
      tests and hand-run dbt use it; empty and no table means the invocation's start. -#}
  {%- set as_of = var('as_of', '') -%}
  {%- if as_of -%}
    cast('{{ as_of }}' as timestamp)
  {%- elif execute and adapter.get_relation(database=target.database, schema='_rankflow', identifier='build_clock') -%}
    (select as_of from _rankflow.build_clock)
  {%- else -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
  {%- endif -%}
{%- endmacro %}


{% macro rankflow_loaded_at() -%}
  {#- When this build started (naive UTC); rows keep it until a later build rewrites them. -#}
  cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
{%- endmacro %}


{% macro rankflow_load_columns() -%}
  {#- Lineage of every row of an incremental model: which dbt invocation wrote it, and when.
      A row an incremental run did not touch keeps the values of the build that wrote it. -#}
  '{{ invocation_id }}' as _load_id,
  {{ rankflow_loaded_at() }} as _loaded_at
{%- endmacro %}


{% macro smoothed_ctr(clicks, impressions) -%}
  {#- Bayesian-smoothed CTR: (clicks + m * prior) / (impressions + m). With m = 0 and no
      impressions it is null rather than a division by zero. -#}
  {%- set prior = var('ctr_prior') | float -%}
  {%- set strength = var('ctr_prior_strength') | float -%}
  (({{ clicks }}) + {{ strength * prior }}) / nullif(({{ impressions }}) + {{ strength }}, 0)
{%- endmacro %}


{% macro export_location(file_stem) -%}
  {#- Exports go to var('exports_dir'), which rankflow.warehouse.build points at a fresh folder per
      build and swaps in only after every model and test passed ($RANKFLOW_EXPORTS_DIR by hand). -#}
  {{- var('exports_dir', env_var('RANKFLOW_EXPORTS_DIR', '')) ~ '/' ~ file_stem ~ '.parquet' -}}
{%- endmacro %}


{% macro utc_timestamp(column) -%}
  {#- Any parquet timestamp (naive or UTC-adjusted, s / ms / us / ns) as a naive UTC timestamp.
      Via timestamptz because DuckDB cannot cast TIMESTAMPTZ_NS (what pandas writes for tz-aware
      columns) to TIMESTAMP directly; naive values pass through the session zone, which the
      profile pins to UTC. -#}
  cast(cast({{ column }} as timestamptz) as timestamp)
{%- endmacro %}
