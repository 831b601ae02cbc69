{#- dbt's is_incremental(), extended to the day_partitioned materialization
    (macros/day_partitioned.sql): true when the model's relation exists, the build is not a
    --full-refresh, and the model is incremental or day-partitioned. This project's version
    takes precedence over dbt's; unit tests still override it by name. -#}
{% macro is_incremental() -%}
  {%- if not execute or should_full_refresh() -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set materialized = model.config.materialized -%}
  {%- if materialized not in ('incremental', 'day_partitioned') -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set relation = adapter.get_relation(this.database, this.schema, this.table) -%}
  {%- set expected = 'table' if materialized == 'incremental' else 'view' -%}
  {{ return(relation is not none and relation.type == expected) }}
{%- endmacro %}
