{#- AIPL: each user's stage (A awareness, I interest, P purchase, L loyalty) per day, for every
    AIPL model declared in aipl_daily's config.meta.aipl (models/marts/aipl/_aipl__models.yml).

    A stage's rules are a list evaluated left to right: the first item is a condition, each later
    item is {and: condition} or {or: condition}, so [a, {or: b}, {and: c}] means ((a or b) and c).
    A condition is one of
      behavior: {event_type, last_days, channels?, object_attribute?, object_values?,
                 count?: {op: value}, amount?: {op: value}}   (count defaults to {">=": 1})
      tag:      {name, <op>: value}  with op one of =, !=, >, >=, <, <=, in, not_in, is_null,
                 not_null, within_last_days (date tags: the value falls in the N days ending on
                 the stat date)
    A user meeting several stages' rules on a day takes the highest: L > P > I > A. Behaviour
    windows end on the stat date; tag conditions read the current user_tags except
    within_last_days, which is relative to the stat date. -#}

{% macro aipl_fail(message) -%}
    {{ exceptions.raise_compiler_error(model_origin()[0] ~ ': aipl_daily: ' ~ message) }}
{%- endmacro %}

{% macro aipl_stage_keys() -%}
    {%- do return([('L', 'loyalty'), ('P', 'purchase'), ('I', 'interest'), ('A', 'awareness')]) -%}
{%- endmacro %}

{% macro aipl_comparison_ops() -%}
    {%- do return({'=': '=', '!=': '<>', '>': '>', '>=': '>=', '<': '<', '<=': '<='}) -%}
{%- endmacro %}

{#- Whether a count of 0 passes {op: value}. -#}
{% macro aipl_zero_passes(spec) -%}
    {%- set op, value = (spec.items() | list)[0] -%}
    {%- do return((op == '=' and value == 0) or (op == '!=' and value != 0) or (op == '>' and 0 > value)
                  or (op == '>=' and 0 >= value) or (op == '<' and 0 < value) or (op == '<=' and 0 <= value)) -%}
{%- endmacro %}

{% macro aipl_literal(value) -%}
    {%- if value is number and value is not sameas true and value is not sameas false -%}
        {{ value }}
    {%- elif value is string -%}
        '{{ value | replace("'", "''") }}'
    {%- else -%}
        {{ aipl_fail("value '" ~ value ~ "' must be a number or a string") }}
    {%- endif -%}
{%- endmacro %}

{#- `{">=": 2}` on `expr` as SQL; `where` names the place for errors. -#}
{% macro aipl_threshold(expr, spec, where) -%}
    {%- if spec is not mapping or spec | length != 1 -%}
        {{ aipl_fail(where ~ " must be one comparison such as {\">=\": 2}") }}
    {%- endif -%}
    {%- for op, value in spec.items() -%}
        {%- if op not in aipl_comparison_ops() -%}
            {{ aipl_fail(where ~ ": unknown comparison '" ~ op ~ "' (use =, !=, >, >=, <, <=)") }}
        {%- endif -%}
        {%- if value is not number -%}
            {{ aipl_fail(where ~ ": threshold '" ~ value ~ "' is not a number") }}
        {%- endif -%}
        {{ expr }} {{ aipl_comparison_ops()[op] }} {{ value }}
    {%- endfor -%}
{%- endmacro %}

{#- Parse and check one model's rules; returns {stages: {L: [(joiner, kind, spec)]...},
    behaviors: [spec...], has_tags, max_days}. -#}
{% macro aipl_parse_model(m, index, tag_columns, known_types) -%}
    {%- set where = 'meta.aipl.models[' ~ index ~ ']' -%}
    {%- if m is not mapping or not m.get('name') -%}
        {{ aipl_fail(where ~ " needs a name") }}
    {%- endif -%}
    {%- if not (m.name is string and m.name | length <= 40 and (m.name | replace('_', '') | replace('-', '')).isalnum()) -%}
        {{ aipl_fail(where ~ ".name '" ~ m.name ~ "' must be letters, digits, - or _, at most 40 characters") }}
    {%- endif -%}
    {%- set stages = m.get('stages') -%}
    {%- if stages is not mapping -%}
        {{ aipl_fail(where ~ " (" ~ m.name ~ ") needs stages: awareness, interest, purchase, loyalty") }}
    {%- endif -%}
    {%- for key in stages -%}
        {%- if key not in ['awareness', 'interest', 'purchase', 'loyalty'] -%}
            {{ aipl_fail(where ~ ".stages." ~ key ~ " is not a stage (awareness, interest, purchase, loyalty)") }}
        {%- endif -%}
    {%- endfor -%}
    {%- set parsed = {'name': m.name, 'stages': {}, 'behaviors': [], 'has_tags': false, 'max_days': 1, 'zero_ok': false} -%}
    {%- for code, stage in aipl_stage_keys() -%}
        {%- set rules = stages.get(stage) -%}
        {%- set swhere = where ~ '.stages.' ~ stage -%}
        {%- if rules is none or rules is string or rules is not iterable or rules | length == 0 -%}
            {{ aipl_fail(swhere ~ " must be a non-empty list of conditions") }}
        {%- endif -%}
        {%- set items = [] -%}
        {%- for rule in rules -%}
            {%- set rwhere = swhere ~ '[' ~ loop.index0 ~ ']' -%}
            {%- if rule is not mapping or rule | length != 1 -%}
                {{ aipl_fail(rwhere ~ " must have exactly one key: behavior or tag (first item), or and / or (later items)") }}
            {%- endif -%}
            {%- set key = (rule.keys() | list)[0] -%}
            {%- if loop.first -%}
                {%- if key not in ['behavior', 'tag'] -%}
                    {{ aipl_fail(rwhere ~ " starts the list, so it must be a behavior or tag condition, not '" ~ key ~ "'") }}
                {%- endif -%}
                {%- set joiner, cond = none, rule -%}
            {%- else -%}
                {%- if key not in ['and', 'or'] -%}
                    {{ aipl_fail(rwhere ~ " must be {and: condition} or {or: condition}, not '" ~ key ~ "'") }}
                {%- endif -%}
                {%- set joiner, cond = key, rule[key] -%}
                {%- set rwhere = rwhere ~ '.' ~ key -%}
            {%- endif -%}
            {%- if cond is not mapping or cond | length != 1 or (cond.keys() | list)[0] not in ['behavior', 'tag'] -%}
                {{ aipl_fail(rwhere ~ " must be one behavior or tag condition") }}
            {%- endif -%}
            {%- set kind = (cond.keys() | list)[0] -%}
            {%- set spec = cond[kind] -%}
            {%- set cwhere = rwhere ~ '.' ~ kind -%}
            {%- if spec is not mapping -%}
                {{ aipl_fail(cwhere ~ " must be a mapping") }}
            {%- endif -%}
            {%- if kind == 'behavior' -%}
                {%- for k in spec -%}
                    {%- if k not in ['event_type', 'last_days', 'channels', 'object_attribute', 'object_values', 'count', 'amount'] -%}
                        {{ aipl_fail(cwhere ~ ": unknown key '" ~ k ~ "' (event_type, last_days, channels, object_attribute, object_values, count, amount)") }}
                    {%- endif -%}
                {%- endfor -%}
                {%- if not spec.get('event_type') or spec.event_type is not string -%}
                    {{ aipl_fail(cwhere ~ ".event_type is required (one behaviour type, e.g. purchase)") }}
                {%- endif -%}
                {%- if spec.get('last_days') is not number or spec.last_days < 1 or spec.last_days != (spec.last_days | int) -%}
                    {{ aipl_fail(cwhere ~ ".last_days must be a whole number of days >= 1") }}
                {%- endif -%}
                {%- for k in ['channels', 'object_values'] -%}
                    {%- if spec.get(k) is not none and (spec[k] is string or spec[k] is not iterable or spec[k] | length == 0) -%}
                        {{ aipl_fail(cwhere ~ "." ~ k ~ " must be a non-empty list") }}
                    {%- endif -%}
                {%- endfor -%}
                {%- set count_spec = spec.get('count') or {'>=': 1} -%}
                {%- set count_check = aipl_threshold('c', count_spec, cwhere ~ '.count') -%}
                {%- if spec.get('amount') is not none -%}
                    {%- set amount_check = aipl_threshold('a', spec.amount, cwhere ~ '.amount') -%}
                {%- endif -%}
                {#- a user with no such behaviour meets this condition when 0 passes the count test -#}
                {%- if aipl_zero_passes(count_spec) and spec.get('amount') is none -%}{%- do parsed.update({'zero_ok': true}) -%}{%- endif -%}
                {%- if known_types and spec.event_type not in known_types -%}
                    {{ aipl_fail(cwhere ~ ".event_type '" ~ spec.event_type ~ "' is not in dim_behavior_types (" ~ known_types | join(', ') ~ ")") }}
                {%- endif -%}
                {%- do parsed.behaviors.append(spec) -%}
                {%- if spec.last_days > parsed.max_days -%}{%- do parsed.update({'max_days': spec.last_days | int}) -%}{%- endif -%}
                {%- do items.append((joiner, 'behavior', parsed.behaviors | length - 1, count_spec)) -%}
            {%- else -%}
                {%- if not spec.get('name') or (tag_columns is not none and spec.name not in tag_columns) -%}
                    {{ aipl_fail(cwhere ~ ".name '" ~ spec.get('name') ~ "' is not a column of user_tags") }}
                {%- endif -%}
                {%- set ops = spec.keys() | reject('equalto', 'name') | list -%}
                {%- if ops | length != 1 -%}
                    {{ aipl_fail(cwhere ~ " needs exactly one operator besides name (=, !=, >, >=, <, <=, in, not_in, is_null, not_null, within_last_days)") }}
                {%- endif -%}
                {%- if ops[0] not in ['=', '!=', '>', '>=', '<', '<=', 'in', 'not_in', 'is_null', 'not_null', 'within_last_days'] -%}
                    {{ aipl_fail(cwhere ~ ": unknown operator '" ~ ops[0] ~ "'") }}
                {%- endif -%}
                {%- if ops[0] in ['in', 'not_in'] and (spec[ops[0]] is string or spec[ops[0]] is not iterable) -%}
                    {{ aipl_fail(cwhere ~ "." ~ ops[0] ~ " takes a list of values") }}
                {%- endif -%}
                {%- if ops[0] == 'within_last_days' and (spec[ops[0]] is not number or spec[ops[0]] < 1) -%}
                    {{ aipl_fail(cwhere ~ ".within_last_days must be a whole number of days >= 1") }}
                {%- endif -%}
                {%- do parsed.update({'has_tags': true}) -%}
                {%- do items.append((joiner, 'tag', spec.name, ops[0], spec[ops[0]])) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- do parsed.stages.update({code: items}) -%}
    {%- endfor -%}
    {%- do return(parsed) -%}
{%- endmacro %}

{#- The documented columns of user_tags (none in a unit test, where dbt provides no graph). -#}
{% macro aipl_tag_columns(relation) -%}
    {%- set node = (graph.get('nodes') or {}).get('model.openaudience.user_tags') -%}
    {%- do return((node.columns.keys() | list) if node else none) -%}
{%- endmacro %}

{#- SQL of one tag condition for the user row `t` on day `d.stat_date`. -#}
{% macro aipl_tag_sql(column, op, value) -%}
    {%- set col = 't.' ~ adapter.quote(column) -%}
    {%- if op == 'is_null' -%}({{ col }} is null)
    {%- elif op == 'not_null' -%}({{ col }} is not null)
    {%- elif op == 'in' -%}({{ col }} in ({% for v in value %}{{ aipl_literal(v) }}{{ ', ' if not loop.last }}{% endfor %}))
    {%- elif op == 'not_in' -%}({{ col }} not in ({% for v in value %}{{ aipl_literal(v) }}{{ ', ' if not loop.last }}{% endfor %}))
    {%- elif op == 'within_last_days' -%}(cast({{ col }} as date) > {{ dbt.dateadd('day', -(value | int), 'd.stat_date') }} and cast({{ col }} as date) <= d.stat_date)
    {%- else -%}({{ col }} {{ aipl_comparison_ops()[op] }} {{ aipl_literal(value) }})
    {%- endif -%}
{%- endmacro %}

{% macro aipl_behavior_filter(spec) -%}
    event_type = {{ aipl_literal(spec.event_type) }}
    {%- if spec.get('channels') %} and channel in ({% for v in spec.channels %}{{ aipl_literal(v) }}{{ ', ' if not loop.last }}{% endfor %}){% endif %}
    {%- if spec.get('object_attribute') %} and object_attribute = {{ aipl_literal(spec.object_attribute) }}{% endif %}
    {%- if spec.get('object_values') %} and object_value in ({% for v in spec.object_values %}{{ aipl_literal(v) }}{{ ', ' if not loop.last }}{% endfor %}){% endif %}
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

{% macro aipl_daily() -%}
    {%- set behaviors = ref('fct_behaviors') -%}
    {%- set tags = ref('user_tags') -%}
    {%- set stages_seed = ref('aipl_stages') -%}
    {%- set types_seed = ref('dim_behavior_types') -%}
    {%- if not execute -%}
        select 1 as placeholder
    {%- else -%}
    {%- set cfg = model_meta().get('aipl') -%}
    {%- if cfg is not mapping or not cfg.get('models') -%}
        {{ aipl_fail("config.meta.aipl.models must list at least one AIPL model") }}
    {%- endif -%}
    {#- rules are checked against the documented columns of user_tags and the behaviour types
        seed (read from the warehouse, except in unit tests, where refs are fixtures) -#}
    {%- set tag_columns = aipl_tag_columns(tags) -%}
    {%- if model.resource_type == 'unit_test' or types_seed is string -%}
        {%- set known_types = [] -%}
    {%- else -%}
        {%- set known_types = run_query('select event_type from ' ~ types_seed ~ ' order by event_type').columns[0].values() | list -%}
    {%- endif -%}
    {%- set names = [] -%}
    {%- set models = [] -%}
    {%- for m in cfg.models -%}
        {%- set parsed = aipl_parse_model(m, loop.index0, tag_columns, known_types) -%}
        {%- if parsed.name in names -%}
            {{ aipl_fail("two AIPL models are named '" ~ parsed.name ~ "'") }}
        {%- endif -%}
        {%- do names.append(parsed.name) -%}
        {%- do models.append(parsed) -%}
    {%- endfor -%}
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

{%- set any_filter %}({% for b in m.behaviors %}({{ aipl_behavior_filter(b) }}){{ ' or ' if not loop.last }}{% endfor %}){% endset %}
{%- if single_day %}

{{ p }}_windowed as (
    -- {{ m.name }}: one day, so each condition's window is summed per user in one pass
    select
        d.stat_date,
        b.one_id
        {%- for beh in m.behaviors %}
        {%- set in_window = aipl_behavior_filter(beh) ~ ' and b.behavior_date > ' ~ dbt.dateadd('day', -(beh.last_days | int), 'd.stat_date') %},
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
        {%- set f = aipl_behavior_filter(b) %},
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
        {%- set since = dbt.dateadd('day', -(beh.last_days | int), 'd.stat_date') %},
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
        (
            {%- for item in m.stages[code] %}
            {%- if item[1] == 'behavior' %}
            {%- set spec = m.behaviors[item[2]] %}
            {%- set c = 'coalesce(w.c' ~ item[2] ~ ', 0)' %}
            {%- set a = 'coalesce(w.a' ~ item[2] ~ ', 0)' %}
            {%- set cond = '(' ~ aipl_threshold(c, item[3], 'count') ~ ((' and ' ~ aipl_threshold(a, spec.amount, 'amount')) if spec.get('amount') is not none else '') ~ ')' %}
            {%- else %}
            {%- set cond = 'coalesce(' ~ aipl_tag_sql(item[2], item[3], item[4]) ~ ', false)' %}
            {%- endif %}
            {{ '(' * (m.stages[code] | length - loop.index0 - 1) if loop.first }}{{ (' ' ~ item[0] ~ ' ') if not loop.first }}{{ cond }}{{ ')' if not loop.first }}
            {%- endfor %}
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
