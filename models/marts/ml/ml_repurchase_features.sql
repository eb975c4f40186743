{#- Repurchase features as of a set of cutoff dates, one row per (cutoff, predictable user).

    T is the day of the latest purchase on or before the run's as-of date (the manual's reference
    date; marts.ml_reference_date, which recommendation reads too). The cutoffs: T itself (role 'score', no label), T - N ('validate'), and
    training_cutoffs 'train' ones from T - 2N back, cutoff_step_days apart (T - 2N, T - 2N - step,
    ...; the step defaults to N). A row's label is a purchase in (cutoff, cutoff + N], so every
    training label ends on or before the validation cutoff and
    nothing a cutoff's features see comes after it: every feature reads purchases on or before
    its cutoff only.

    Features: the manual's 14 (amounts, counts in the last 7/30/90 days, days since the first and
    last purchase, purchase days, channels, the average interval and the repurchase ratio), plus
    category breadth, the category bought most (what people buy says whether they come back:
    consumables do, durables do not), the spend trend (last 90 days against the 90 before) and R/F/M quintiles
    within the cutoff.

    Each person's purchases are read once for all cutoffs, not once per cutoff: grouped by person
    (after a pass per day), every feature and label of every cutoff k is a conditional aggregate
    (suffix _k: over the purchases on or before cutoff k), and the small per-person result is then
    turned into one row per (cutoff, person). Channels count from each channel's first day, and
    purchase lines per (person, category) the same way, per cutoff. -#}
{%- set cfg = repurchase_config() -%}
{%- set n = cfg.horizon_days -%}
{%- set ks = range(0, cfg.training_cutoffs + 2) -%}
{#- days before T of cutoff k: 0 (score), N (validate), then 2N, 2N + step, 2N + 2 step, ... -#}
{%- set offsets = [0, n] -%}
{%- for j in range(cfg.training_cutoffs) -%}{%- do offsets.append(2 * n + j * cfg.cutoff_step_days) -%}{%- endfor -%}
with lines as (  -- behaviour purchases or paid order lines (ml_purchases says which)
    select one_id, occurred_at, purchase_date as behavior_date, channel, item_id, amount as behavior_amount
    from {{ ref('ml_purchases') }}
),

purchases as (
    select
        one_id,
        occurred_at,
        min(behavior_date) as purchase_date,
        min(channel) as channel,
        sum(coalesce(behavior_amount, 0)) as amount
    from lines
    group by one_id, occurred_at
),

reference as (
    select reference_date as t from {{ ref('ml_reference_date') }}
),

steps as (
    select 0 as k, 'score' as cutoff_role
    union all select 1, 'validate'
    {%- for k in range(2, cfg.training_cutoffs + 2) %}
    union all select {{ k }}, 'train'
    {%- endfor %}
),

cutoffs as (
    select s.k, s.cutoff_role, cast(r.t - case s.k {%- for k in ks %} when {{ k }} then {{ offsets[k] }}{% endfor %} end
                                    as date) as cutoff_date
    from steps as s cross join reference as r
    where r.t is not null
),

-- the same cutoffs as one row: c0 = T, c1 = T - N, ...
cutoff_row as (
    select
        {%- for k in ks %}
        cast(r.t - {{ offsets[k] }} as date) as c{{ k }}{{ ',' if not loop.last }}
        {%- endfor %}
    from reference as r
),

-- a person's purchases per day, and the day each of their channels was first used
purchase_days as (
    select
        one_id,
        purchase_date,
        count(*) as purchases,
        sum(amount) as amount,
        max(amount) as max_amount,
        min(amount) as min_amount
    from purchases
    group by one_id, purchase_date
),

channel_starts as (
    select one_id, channel, min(purchase_date) as first_date
    from purchases
    where channel is not null
    group by one_id, channel
),

channels_by_person as (
    select
        s.one_id
        {%- for k in ks %},
        count(case when s.first_date <= c.c{{ k }} then 1 end) as channels_{{ k }}
        {%- endfor %}
    from channel_starts as s
    cross join cutoff_row as c
    group by s.one_id
),

-- one row per person: every cutoff's history and label
days_by_person as (
    select
        d.one_id
        {%- for k in ks %}
        {%- set c = 'c.c' ~ k %},
        cast(sum(case when d.purchase_date <= {{ c }} then d.purchases end) as bigint) as purchase_count_{{ k }},
        sum(case when d.purchase_date <= {{ c }} then d.amount end) as total_amount_{{ k }},
        max(case when d.purchase_date <= {{ c }} then d.max_amount end) as max_amount_{{ k }},
        min(case when d.purchase_date <= {{ c }} then d.min_amount end) as min_amount_{{ k }},
        sum(case when d.purchase_date > {{ c }} - 7 and d.purchase_date <= {{ c }} then d.purchases else 0 end)
            as purchases_7d_{{ k }},
        sum(case when d.purchase_date > {{ c }} - 30 and d.purchase_date <= {{ c }} then d.purchases else 0 end)
            as purchases_30d_{{ k }},
        sum(case when d.purchase_date > {{ c }} - 90 and d.purchase_date <= {{ c }} then d.purchases else 0 end)
            as purchases_90d_{{ k }},
        sum(case when d.purchase_date > {{ c }} - 90 and d.purchase_date <= {{ c }} then d.amount else 0 end)
            as amount_90d_{{ k }},
        sum(case when d.purchase_date > {{ c }} - 180 and d.purchase_date <= {{ c }} - 90
                 then d.amount else 0 end) as amount_prev_90d_{{ k }},
        min(case when d.purchase_date <= {{ c }} then d.purchase_date end) as first_date_{{ k }},
        max(case when d.purchase_date <= {{ c }} then d.purchase_date end) as last_date_{{ k }},
        count(case when d.purchase_date <= {{ c }} then 1 end) as purchase_days_{{ k }},
        max(case when d.purchase_date > {{ c }} and d.purchase_date <= {{ c }} + {{ n }} then 1 else 0 end)
            as labelled_{{ k }}
        {%- endfor %}
    from purchase_days as d
    cross join cutoff_row as c
    group by d.one_id
),

-- purchase lines per (person, category) on or before each cutoff
bought_by_person as (
    select
        l.one_id,
        pt.category
        {%- for k in ks %},
        count(case when l.behavior_date <= c.c{{ k }} then 1 end) as lines_{{ k }}
        {%- endfor %}
    from lines as l
    inner join {{ ref('product_tags') }} as pt on pt.item_id = l.item_id
    cross join cutoff_row as c
    where pt.category is not null
    group by l.one_id, pt.category
),

-- per person and cutoff: the categories bought, and the one of most lines (ties: the first by name)
top_lines as (
    select
        one_id
        {%- for k in ks %},
        max(lines_{{ k }}) as top_lines_{{ k }},
        count(case when lines_{{ k }} > 0 then 1 end) as categories_{{ k }}
        {%- endfor %}
    from bought_by_person
    group by one_id
),

categories_by_person as (
    select
        b.one_id
        {%- for k in ks %},
        max(t.categories_{{ k }}) as categories_{{ k }},
        min(case when b.lines_{{ k }} > 0 and b.lines_{{ k }} = t.top_lines_{{ k }} then b.category end)
            as main_category_{{ k }}
        {%- endfor %}
    from bought_by_person as b
    inner join top_lines as t on t.one_id = b.one_id
    group by b.one_id
),

history_by_person as (
    select
        d.*
        {%- for k in ks %},
        coalesce(ch.channels_{{ k }}, 0) as channels_{{ k }},
        m.categories_{{ k }},
        m.main_category_{{ k }}
        {%- endfor %}
    from days_by_person as d
    left join channels_by_person as ch on ch.one_id = d.one_id
    left join categories_by_person as m on m.one_id = d.one_id
),

{%- set history_columns = ['purchase_count', 'total_amount', 'max_amount', 'min_amount', 'purchases_7d',
                           'purchases_30d', 'purchases_90d', 'amount_90d', 'amount_prev_90d', 'first_date',
                           'last_date', 'purchase_days', 'channels', 'categories', 'main_category',
                           'labelled'] %}

history as (
    select
        c.cutoff_date,
        c.cutoff_role,
        h.one_id
        {%- for column in history_columns %},
        case c.k {%- for k in ks %} when {{ k }} then h.{{ column }}_{{ k }}{% endfor %} end as {{ column }}
        {%- endfor %}
    from cutoffs as c
    cross join history_by_person as h
),

predictable as (
    select
        h.*,
        cast(h.cutoff_date - h.first_date as integer) as days_since_first,
        cast(h.cutoff_date - h.last_date as integer) as days_since_last
    from history as h
    where h.last_date > h.cutoff_date - {{ cfg.lookback_days }}
),

final as (
    select
        p.cutoff_date,
        p.cutoff_role,
        p.one_id,
        cast(p.total_amount as {{ type_double() }}) / p.purchase_count as avg_amount,
        cast(p.max_amount as {{ type_money() }}) as max_amount,
        cast(p.min_amount as {{ type_money() }}) as min_amount,
        cast(p.total_amount as {{ type_money() }}) as total_amount,
        cast(p.purchase_count as integer) as purchase_count,
        cast(p.purchases_7d as integer) as purchases_7d,
        cast(p.purchases_30d as integer) as purchases_30d,
        cast(p.purchases_90d as integer) as purchases_90d,
        p.days_since_first,
        p.days_since_last,
        cast(p.purchase_days as integer) as purchase_days,
        cast(p.channels as integer) as channels,
        case when p.purchase_count > 1
             then cast(p.days_since_first - p.days_since_last as {{ type_double() }}) / (p.purchase_count - 1)
        end as avg_interval,
        case when p.purchase_count > 1
             then cast(p.days_since_first - p.days_since_last as {{ type_double() }})
                  / (p.purchase_count - 1) / greatest(p.days_since_last, 1)
        end as repurchase_ratio,
        cast(coalesce(p.categories, 0) as integer) as categories,
        p.main_category,
        cast(p.amount_90d + 1 as {{ type_double() }}) / cast(p.amount_prev_90d + 1 as {{ type_double() }}) as spend_trend,
        cast(ntile(5) over (partition by p.cutoff_date order by p.days_since_last desc, p.one_id) as integer)
            as r_score,
        cast(ntile(5) over (partition by p.cutoff_date order by p.purchase_count, p.one_id) as integer)
            as f_score,
        cast(ntile(5) over (partition by p.cutoff_date order by p.total_amount, p.one_id) as integer)
            as m_score,
        case when p.cutoff_role = 'score' then null
             when p.labelled = 1 then 1 else 0 end as label
    from predictable as p
)

select * from final
