{% macro daily_window_features(keys, prefix, windows=[1, 7, 28], ctr_windows=[7, 28], with_recency=false) -%}
{#-
  Rolling daily features for the entity `keys` (a list of columns of fct_labelled_impressions):
  one row per entity per feature day D, stamped D 00:00 UTC and computed ONLY from impressions
  with ts < D 00:00.

  How the time rule is enforced: impressions are first summed per entity and UTC day; each day of
  activity then feeds the feature days D = day + 1 .. day + max(windows) and no others. A day's
  own events therefore never reach the feature stamped that day (an event at D 00:00:00 is on
  day D), let alone an earlier one. The "N-day" window of D is the days D-N .. D-1.

  Rows exist from the day after an entity's first impression through the day after the newest
  raw day (not after the build's as_of), for every D with at least one impression of the entity in the max(windows) days
  before D (the spread below produces exactly those).

  Incremental runs recompute exactly the feature days changed_feature_days() names (the days
  the reloaded impression days feed, and those between the previous and the new cutoff); the
  model's pre-hook deletes them first. They read max(windows) days of history before each.
-#}
{%- set max_window = windows | max -%}
{%- set key_list = keys | join(', ') -%}

with
{%- if is_incremental() %}
feature_days as (
    select feature_date from {{ changed_feature_days(max_window) }}
),

source_days as (
    -- the impression days the changed feature days read
    select distinct cast(feature_date - cast(k as integer) as date) as event_date
    from feature_days cross join range(1, {{ max_window + 1 }}) as offsets(k)
),
{%- endif %}

impressions as (
    select {{ key_list }}, event_date, event_timestamp, label
    from {{ ref('fct_labelled_impressions') }}
    {%- if is_incremental() %}
    where event_date in (select event_date from source_days)
    {%- endif %}
),

newest_day as (
    select {{ feature_cutoff() }} as event_date
),

daily as (
    select
        {{ key_list }},
        event_date,
        count(*) as impressions,
        sum(label) as clicks,
        max(case when label = 1 then event_timestamp end) as last_click_ts
    from impressions
    group by all
),

-- each day of activity feeds the max_window feature days strictly after it
spread as (
    select
        daily.*,
        offsets.days_back,
        daily.event_date + cast(offsets.days_back as integer) as feature_date
    from daily
    cross join range(1, {{ max_window + 1 }}) as offsets(days_back)
),

windowed as (
    select
        {{ key_list }},
        feature_date,
        {%- for w in windows %}
        coalesce(sum(impressions) filter (where days_back <= {{ w }}), 0) as impressions_{{ w }}d,
        coalesce(sum(clicks) filter (where days_back <= {{ w }}), 0) as clicks_{{ w }}d,
        {%- endfor %}
        max(last_click_ts) as last_click_ts
    from spread
    where feature_date <= (select event_date from newest_day) + 1
    {%- if is_incremental() %}
      and feature_date in (select feature_date from feature_days)
    {%- endif %}
    group by all
)

select
    {{ key_list }},
    cast(feature_date as timestamp) as feature_ts,
    feature_date,
    {%- for w in windows %}
    cast(impressions_{{ w }}d as bigint) as {{ prefix }}_impressions_{{ w }}d,
    {%- endfor %}
    {%- for w in windows %}
    cast(clicks_{{ w }}d as bigint) as {{ prefix }}_clicks_{{ w }}d,
    {%- endfor %}
    {%- for w in ctr_windows %}
    cast({{ smoothed_ctr('clicks_' ~ w ~ 'd', 'impressions_' ~ w ~ 'd') }} as double)
        as {{ prefix }}_ctr_{{ w }}d,
    {%- endfor %}
    {%- if with_recency %}
    -- null when the entity had no click in the window (last_click_ts only spans max_window days)
    cast(date_diff('microsecond', last_click_ts, cast(feature_date as timestamp)) as double)
        / 86400e6 as {{ prefix }}_days_since_last_click,
    {%- endif %}
    {{ rankflow_load_columns() }}
from windowed
{%- endmacro %}
