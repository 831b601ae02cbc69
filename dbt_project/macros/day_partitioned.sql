{#- The day-grain history tables (impressions and the daily feature marts) live outside the
    DuckDB file, as one folder of parquet per day:

        <history_dir>/<model>/<day_column>=YYYY-MM-DD/<invocation_id>_0.parquet
        <history_dir>/<model>/_schema/data_0.parquet      (no rows: the schema, never empty)
        <history_dir>/<model>/_written/<invocation_id>_0.parquet   (no rows; this build only)

    and the model's relation is a view over them. Why: a daily build must cost the new day, not
    the history. With the history inside the database file, every build copied the whole file
    (the all-or-nothing swap) and deleted and appended inside its biggest tables, and the daily
    cost grew with the history (docs/benchmarks.md).

    Who does what. rankflow.warehouse.history, before dbt runs, fills the build's history folder
    with hard links to every live day this build keeps (the days it redoes are left out, so a
    removed day disappears) and points the views at that folder. This materialization then runs
    the model's SQL - on an incremental build only the redone days, as before - and writes its
    rows by one partitioned COPY: the day folders it creates are new, and the file names carry
    the invocation id, so a linked (live) file is never written into. After the build the
    history folder is swapped in with the database and the views are pointed at the live folder.

    is_incremental() is true for these models when the view exists and the build is not a
    full refresh (macros/is_incremental.sql). -#}

{% materialization day_partitioned, adapter='duckdb' %}
  {%- set day_column = config.require('day_column') -%}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set root = history_location(this.identifier) -%}
  {%- set incremental = is_incremental() -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% call statement('main') -%}
    copy ({{ sql }}) to {{ history_literal(root) }} (
        format parquet,
        partition_by ({{ day_column }}),
        write_partition_columns true,
        overwrite_or_ignore true,
        filename_pattern '{{ invocation_id }}_{i}'
    )
  {%- endcall %}

  {#- One file with no rows, under this build's name, in a folder of its own that is never
      carried over: the tests of this build read `*/<invocation_id>_*.parquet`
      (macros/test_scope.sql), which therefore always matches a file. A full build also writes
      the schema file the history keeps (the view must read when a model has no rows). -#}
  {% call statement('written_marker') -%}
    copy (select * from ({{ sql }}) limit 0) to {{ history_literal(root ~ '/_written') }} (
        format parquet, per_thread_output true, filename_pattern '{{ invocation_id }}_{i}'
    )
  {%- endcall %}
  {%- if not incremental %}
    {% call statement('schema_file') -%}
      copy (select * from ({{ sql }}) limit 0) to {{ history_literal(root ~ '/_schema') }} (
          format parquet, per_thread_output true
      )
    {%- endcall %}
  {%- endif %}

  {% call statement('view') -%}
    create or replace view {{ target_relation }} as {{ history_select(root) }}
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {% do persist_docs(target_relation, model) %}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}


{% macro history_location(model_name) -%}
  {#- rankflow.warehouse.build passes history_dir (a fresh build folder); by hand,
      $RANKFLOW_HISTORY_DIR. -#}
  {%- set root = var('history_dir', env_var('RANKFLOW_HISTORY_DIR', '')) -%}
  {%- if not root -%}
    {{ exceptions.raise_compiler_error("history_dir is not set: pass --vars '{history_dir: ...}' or set RANKFLOW_HISTORY_DIR") }}
  {%- endif -%}
  {{- root ~ '/' ~ model_name -}}
{%- endmacro %}


{% macro history_literal(path) -%}
  {#- COPY targets and view bodies take no parameters: a DuckDB string literal, whose only
      escape is a doubled quote (rankflow.warehouse.exports.sql_literal does the same). -#}
  '{{ path | replace("'", "''") }}'
{%- endmacro %}


{% macro history_select(root) -%}
  {#- hive_partitioning off: the day is a column of every file, and the _schema folder is not
      a hive partition (auto-detection would reject the mix) -#}
  select * from read_parquet({{ history_literal(root ~ '/*/*.parquet') }}, hive_partitioning = false)
{%- endmacro %}
