{#- AIPL: each user's stage (A awareness, I interest, P purchase, L loyalty) per day, for every
    AIPL model declared in aipl_daily's config.meta.aipl (models/marts/aipl/_aipl__models.yml).

    The rules are conditions of the condition language (docs/conditions.md), compiled by
    `oa aipl compile` into macros/aipl/_aipl_rules.sql (per engine: each model's behaviours,
    the SQL of its four stages, and whether every user is a candidate); this macro builds the
    days, the behaviour windows and the precedence around them. The model refuses to compile
    when the rules in the YAML are not the ones that file was made from.

    A behaviour leaf sums the N days ending on the stat date, inclusive; tag conditions read the
    current user_tags except date windows (last_days), which are relative to the stat date. A
    user meeting several stages' rules on a day takes the highest: L > P > I > A. -#}

{% macro aipl_fail(message) -%}
    {{ exceptions.raise_compiler_error(model_origin()[0] ~ ': aipl_daily: ' ~ message) }}
{%- endmacro %}

{% macro aipl_stage_keys() -%}
    {%- do return([('L', 'loyalty'), ('P', 'purchase'), ('I', 'interest'), ('A', 'awareness')]) -%}
{%- endmacro %}

{% macro aipl_literal(value) -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro %}

{#- The first and last stat dates: vars aipl_start / aipl_end, each defaulting to the as-of date. -#}
{% macro aipl_range() -%}
    {%- set start = var('aipl_start', '') -%}
    {%- set end = var('aipl_end', '') -%}
    {%- set start_sql = ("cast('" ~ start ~ "' as date)") if start else as_of_date() -%}
    {%- set end_sql = ("cast('" ~ end ~ "' as date)") if end else as_of_date() -%}
    {%- do return((start_sql, end_sql)) -%}
{%- endmacro %}

{#- Pre-hook: an incremental run replaces the days it computes (and drops models no longer declared). -#}
{% macro aipl_clear_range() -%}
    {{ return(adapter.dispatch('aipl_clear_range', 'openaudience')()) }}
{%- endmacro %}

{% macro default__aipl_clear_range() -%}
    {%- if execute and is_incremental() -%}
        {%- set start_sql, end_sql = aipl_range() -%}
        {%- set names = (model_meta().get('aipl') or {}).get('models') or [] -%}
        delete from {{ this }}
        where (stat_date >= {{ start_sql }} and stat_date <= {{ end_sql }})
        {%- if names %}
            or aipl_model not in ({% for m in names %}{{ aipl_literal(m.name) }}{{ ', ' if not loop.last }}{% endfor %})
        {%- endif %}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- Spark (Parquet tables have no DELETE): the days' partitions are dropped, so a day that now
    stages nobody is emptied too, and insert_overwrite writes the new ones. Rows of a model no
    longer declared stay on the days outside the range; readers select the declared models. -#}
{% macro spark__aipl_clear_range() -%}
    {%- if execute and is_incremental() -%}
        {%- set today = (var('as_of', '') or modules.datetime.date.today().isoformat()) | string -%}
        {%- set first = modules.datetime.date.fromisoformat((var('aipl_start', '') or today) | string) -%}
        {%- set last = modules.datetime.date.fromisoformat((var('aipl_end', '') or today) | string) -%}
        {%- set days = (last - first).days -%}
        {%- if days < 0 -%}
            select 1
        {%- else -%}
        alter table {{ this }} drop if exists
        {%- for n in range(days + 1) %}
            partition (stat_date = '{{ (first + modules.datetime.timedelta(days=n)).isoformat() }}'){{ ',' if not loop.last }}
        {%- endfor %}
        {%- endif -%}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro aipl_daily() -%}
    {%- set behaviors = ref('fct_behaviors') -%}
    {%- set tags = ref('user_tags') -%}
    {%- set stages_seed = ref('aipl_stages') -%}
    {%- if not execute -%}
        select 1 as placeholder
    {%- else -%}
    {%- set cfg = model_meta().get('aipl') -%}
    {%- if cfg is not mapping or not cfg.get('models') -%}
        {{ aipl_fail("config.meta.aipl.models must list at least one AIPL model") }}
    {%- endif -%}
    {%- if local_md5(tojson(cfg, sort_keys=true)) != aipl_rules_hash() -%}
        {{ aipl_fail("AIPL rules changed in models/marts/aipl/_aipl__models.yml; run `oa aipl compile`") }}
    {%- endif -%}
    {%- set models = aipl_rules() -%}
    {%- set start_sql, end_sql = aipl_range() -%}
    {%- set single_day = start_sql == end_sql -%}
with days as (
    select cast(date_day as date) as stat_date
    from ({{ dbt.date_spine('day', start_sql, dbt.dateadd('day', 1, end_sql)) }}) as spine
),

users as (
    select * from {{ tags }}
),
{%- for m in models %}
{%- set p = 'm' ~ loop.index0 %}

{%- set any_filter %}({% for b in m.behaviors %}({{ b.filter }}){{ ' or ' if not loop.last }}{% else %}1 = 0{% endfor %}){% endset %}
{%- if single_day %}

{{ p }}_windowed as (
    -- {{ m.name }}: one day, so each condition's window is summed per user in one pass
    select
        d.stat_date,
        b.one_id
        {%- for beh in m.behaviors %}
        {%- set in_window = '(' ~ beh.filter ~ ') and b.behavior_date > ' ~ dbt.dateadd('day', -beh.days, 'd.stat_date') %},
        coalesce(sum(case when {{ in_window }} then b.behavior_count end), 0) as c{{ loop.index0 }},
        coalesce(sum(case when {{ in_window }} then b.behavior_amount end), 0) as a{{ loop.index0 }}
        {%- endfor %}
    from {{ behaviors }} as b
    cross join days as d
    where b.behavior_date > {{ dbt.dateadd('day', -m.max_days, start_sql) }}
        and b.behavior_date <= {{ end_sql }}
        and {{ any_filter }}
    group by d.stat_date, b.one_id
),
{%- else %}

{{ p }}_daily as (
    -- {{ m.name }}: per user and day, the behaviour each condition counts
    select
        one_id,
        behavior_date
        {%- for b in m.behaviors %}
        {%- set f = b.filter %},
        sum(case when {{ f }} then behavior_count end) as c{{ loop.index0 }},
        sum(case when {{ f }} then behavior_amount end) as a{{ loop.index0 }}
        {%- endfor %}
    from {{ behaviors }}
    where behavior_date > {{ dbt.dateadd('day', -m.max_days, start_sql) }}
        and behavior_date <= {{ end_sql }}
        and {{ any_filter }}
    group by one_id, behavior_date
),

{{ p }}_windowed as (
    -- every stat date sums the days of each condition's window
    select
        d.stat_date,
        b.one_id
        {%- for beh in m.behaviors %}
        {%- set since = dbt.dateadd('day', -beh.days, 'd.stat_date') %},
        coalesce(sum(case when b.behavior_date > {{ since }} then b.c{{ loop.index0 }} end), 0) as c{{ loop.index0 }},
        coalesce(sum(case when b.behavior_date > {{ since }} then b.a{{ loop.index0 }} end), 0) as a{{ loop.index0 }}
        {%- endfor %}
    from days as d
    inner join {{ p }}_daily as b
        on b.behavior_date <= d.stat_date
        and b.behavior_date > {{ dbt.dateadd('day', -m.max_days, 'd.stat_date') }}
    group by d.stat_date, b.one_id
),
{%- endif %}

{{ p }}_flags as (
    select
        d.stat_date,
        {%- if m.has_tags or m.zero_ok %}
        t.one_id
        {%- else %}
        w.one_id
        {%- endif %}
        {%- for code, stage in aipl_stage_keys() %},
        ({{ m.stages[code] }}
        ) as is_{{ code | lower }}
        {%- endfor %}
    {%- if m.has_tags or m.zero_ok %}
    from days as d
    cross join users as t
    left join {{ p }}_windowed as w on w.stat_date = d.stat_date and w.one_id = t.one_id
    {%- else %}
    from {{ p }}_windowed as w
    inner join days as d on d.stat_date = w.stat_date
    {%- endif %}
),

{{ p }}_staged as (
    select
        {{ aipl_literal(m.name) }} as aipl_model,
        stat_date,
        one_id,
        case when is_l then 'L' when is_p then 'P' when is_i then 'I' when is_a then 'A' end as stage
    from {{ p }}_flags
    where is_l or is_p or is_i or is_a
),
{%- endfor %}

staged as (
    {%- for m in models %}
    select * from m{{ loop.index0 }}_staged
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

final as (
    select
        s.aipl_model,
        s.stat_date,
        s.one_id,
        s.stage,
        g.stage_name
    from staged as s
    inner join {{ stages_seed }} as g on g.stage = s.stage
)

select * from final
    {%- endif -%}
{%- endmacro %}
