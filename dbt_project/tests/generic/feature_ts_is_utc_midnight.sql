{#- Feature rows are stamped at UTC midnight (the data contract's time rule counts on it). -#}
{% test feature_ts_is_utc_midnight(model, column_name) %}

select {{ column_name }}
from {{ model }}
where cast({{ column_name }} as timestamp) <> date_trunc('day', cast({{ column_name }} as timestamp))

{% endtest %}
