{#- RFM models. Each model is a dbt model whose properties carry `config.meta.rfm` (see
    models/marts/rfm/_rfm__models.yml) and whose SQL file is one line: {{ rfm_model() }}.

    Breakpoints are read as left-closed, right-open intervals. With breakpoints [b1, ..., bk]:
      frequency and monetary: [b1, b2) scores 1, ..., [bk, +inf) scores k;
      recency_days:           [b1, b2) scores k, ..., [bk, +inf) scores 1 (fewer days, higher score).
    A value below b1 gets no score and the user is left out of the model, as are users whose
    purchase time or amount is null. -#}

{% macro rfm_fail(message) -%}
    {%- set origin = model_origin() -%}
    {{ exceptions.raise_compiler_error(origin[0] ~ ': RFM model ' ~ origin[1] ~ ': ' ~ message) }}
{%- endmacro %}

{#- The model's meta.rfm, checked; errors name the properties file and the key to fix. -#}
{% macro rfm_config() -%}
    {%- set cfg = model_meta().get('rfm') -%}
    {%- if cfg is none or cfg is not mapping -%}
        {{ rfm_fail("no config.meta.rfm mapping; declare the model's input, breakpoints and comparison there") }}
    {%- endif -%}
    {%- for key in cfg -%}
        {%- if key not in ['input', 'window_days', 'as_of', 'recency_days', 'frequency', 'monetary', 'comparison'] -%}
            {{ rfm_fail("unknown key '" ~ key ~ "' in meta.rfm (known: input, window_days, as_of, recency_days, frequency, monetary, comparison)") }}
        {%- endif -%}
    {%- endfor -%}
    {%- if cfg.get('input') not in ['transactions', 'customers'] -%}
        {{ rfm_fail("meta.rfm.input must be 'transactions' or 'customers', not '" ~ cfg.get('input') ~ "'") }}
    {%- endif -%}
    {%- set window = cfg.get('window_days') -%}
    {%- if window is not none -%}
        {%- if cfg.input == 'customers' -%}
            {{ rfm_fail("meta.rfm.window_days applies to transactions only; customer input is already aggregated") }}
        {%- endif -%}
        {%- if window is not number or window < 1 or window != (window | int) -%}
            {{ rfm_fail("meta.rfm.window_days must be a whole number of days >= 1, or left out for all history") }}
        {%- endif -%}
    {%- endif -%}
    {%- for key in ['recency_days', 'frequency', 'monetary'] -%}
        {%- set points = cfg.get(key) -%}
        {%- if points is none or points is string or points is not iterable or points | length < 2 -%}
            {{ rfm_fail("meta.rfm." ~ key ~ " must be a list of at least two breakpoints, e.g. [0, 30, 90]") }}
        {%- endif -%}
        {%- for p in points -%}
            {%- if p is not number or p is sameas true or p is sameas false -%}
                {{ rfm_fail("meta.rfm." ~ key ~ " breakpoint '" ~ p ~ "' is not a number") }}
            {%- endif -%}
            {%- if not loop.first and p <= points[loop.index0 - 1] -%}
                {{ rfm_fail("meta.rfm." ~ key ~ " breakpoints must rise strictly: " ~ points[loop.index0 - 1] ~ " then " ~ p) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- set comparison = cfg.get('comparison') or {} -%}
    {%- if comparison is not mapping -%}
        {{ rfm_fail("meta.rfm.comparison must map recency_days, frequency and monetary to 'mean' or a number") }}
    {%- endif -%}
    {%- for key, value in comparison.items() -%}
        {%- if key not in ['recency_days', 'frequency', 'monetary'] -%}
            {{ rfm_fail("meta.rfm.comparison key '" ~ key ~ "' is not one of recency_days, frequency, monetary") }}
        {%- endif -%}
        {%- if value != 'mean' and (value is not number or value is sameas true or value is sameas false) -%}
            {{ rfm_fail("meta.rfm.comparison." ~ key ~ " must be 'mean' or a number, not '" ~ value ~ "'") }}
        {%- endif -%}
    {%- endfor -%}
    {%- do return(cfg) -%}
{%- endmacro %}

{#- The score of `expr` on breakpoints `points`; `descending` gives the highest score to the
    lowest interval (recency). -#}
{% macro rfm_score(expr, points, descending=false) -%}
    {%- set k = points | length -%}
    case
    {%- for i in range(k - 1, -1, -1) %}
        when {{ expr }} >= {{ points[i] }} then {{ (k - i) if descending else (i + 1) }}
    {%- endfor %}
    end
{%- endmacro %}

{#- The comparison value of a score: the count-weighted mean over the model's users, or a number. -#}
{% macro rfm_comparison(score_column, value) -%}
    {%- if value is none or value == 'mean' -%}
        avg({{ score_column }}) over ()
    {%- else -%}
        {{ value }}
    {%- endif -%}
{%- endmacro %}

{% macro rfm_model() -%}
    {#- dbt reads refs before properties files, so both possible inputs are declared here; the
        input in use comes from meta.rfm at run time. -#}
    {%- set transactions = ref('fct_orders') -%}
    {%- set customers = ref('user_tags') -%}
    {%- set segments = ref('rfm_segments') -%}
    {%- if not execute -%}
        select 1 as placeholder
    {%- else -%}
    {%- set cfg = rfm_config() -%}
    {%- set as_of = ("cast('" ~ cfg.as_of ~ "' as date)") if cfg.get('as_of') else as_of_date() -%}
    {%- set comparison = cfg.get('comparison') or {} -%}
with
{%- if cfg.input == 'transactions' %}
transactions as (
    -- paid orders only: refunded and cancelled orders are not purchases
    select one_id, order_id, ordered_date, total_amount
    from {{ transactions }}
    where is_paid
        and one_id is not null
        and ordered_at is not null
        and total_amount is not null
        and ordered_date <= {{ as_of }}
        {%- if cfg.get('window_days') %}
        and ordered_date > {{ dbt.dateadd('day', -cfg.window_days, as_of) }}
        {%- endif %}
),

measures as (
    select
        one_id,
        {{ dbt.datediff('max(ordered_date)', as_of, 'day') }} as recency_days,
        count(distinct order_id) as frequency,
        cast(sum(total_amount) as {{ type_money() }}) as monetary
    from transactions
    group by one_id
),
{%- else %}
measures as (
    select
        one_id,
        {{ dbt.datediff('cast(last_purchase_at as date)', as_of, 'day') }} as recency_days,
        orders_total as frequency,
        spend_total as monetary
    from {{ customers }}
    where last_purchase_at is not null
        and spend_total is not null
        and orders_total is not null
        and cast(last_purchase_at as date) <= {{ as_of }}
),
{%- endif %}

scored as (
    select
        one_id,
        recency_days,
        frequency,
        monetary,
        {{ rfm_score('recency_days', cfg.recency_days, descending=true) }} as r_score,
        {{ rfm_score('frequency', cfg.frequency) }} as f_score,
        {{ rfm_score('monetary', cfg.monetary) }} as m_score
    from measures
),

compared as (
    select
        *,
        {{ rfm_comparison('r_score', comparison.get('recency_days')) }} as r_comparison,
        {{ rfm_comparison('f_score', comparison.get('frequency')) }} as f_comparison,
        {{ rfm_comparison('m_score', comparison.get('monetary')) }} as m_comparison
    from scored
    where r_score is not null and f_score is not null and m_score is not null
),

coded as (
    select
        *,
        case when r_score >= r_comparison then '1' else '0' end
        || case when f_score >= f_comparison then '1' else '0' end
        || case when m_score >= m_comparison then '1' else '0' end as rfm_code
    from compared
),

final as (
    select
        c.one_id,
        c.recency_days,
        c.frequency,
        c.monetary,
        c.r_score,
        c.f_score,
        c.m_score,
        c.rfm_code,
        s.rfm_segment,
        cast(c.r_comparison as {{ type_double() }}) as r_comparison,
        cast(c.f_comparison as {{ type_double() }}) as f_comparison,
        cast(c.m_comparison as {{ type_double() }}) as m_comparison,
        {{ as_of }} as as_of_date
    from coded as c
    inner join {{ segments }} as s on s.rfm_code = c.rfm_code
)

select * from final
    {%- endif -%}
{%- endmacro %}
