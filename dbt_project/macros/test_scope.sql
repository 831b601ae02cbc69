{#- Data tests of an incremental build look only at the rows this build wrote.

    dbt wraps the model a generic data test reads in get_where_subquery; this project's
    version (it takes precedence over dbt's) adds `_load_id = '<this invocation>'` for the
    models marked `meta: {test_rows_of_this_build: true}` in dbt_project.yml (the
    day-incremental models and the views over them, whose rows all carry _load_id), unless
    the build is a --full-refresh, which tests every row. Rows an incremental build did not
    write were tested by the build that wrote them, and the warehouse only ever moves from one
    tested build to the next (the swap), so scoping the tests this way checks every row once
    instead of every row every day. A test's own `where` config still applies. -#}

{% macro get_where_subquery(relation) -%}
  {%- set where = config.get('where') or '' -%}
  {%- if rankflow_tests_this_build_only() -%}
    {%- set scope = "_load_id = '" ~ invocation_id ~ "'" -%}
    {%- set where = scope ~ (' and (' ~ where ~ ')' if where else '') -%}
  {%- endif -%}
  {%- if where -%}
    {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
  {%- else -%}
    {%- do return(relation) -%}
  {%- endif -%}
{%- endmacro %}


{% macro rankflow_tests_this_build_only() -%}
  {#- True when the running test is attached to a model marked test_rows_of_this_build and the
      build is not a full refresh. -#}
  {%- if flags.FULL_REFRESH or not execute -%}
    {%- do return(false) -%}
  {%- endif -%}
  {%- set attached = model.get('attached_node') if model is mapping else none -%}
  {%- set node = graph.nodes.get(attached) if attached else none -%}
  {%- do return(node is not none and node.config.meta.get('test_rows_of_this_build', false)) -%}
{%- endmacro %}
