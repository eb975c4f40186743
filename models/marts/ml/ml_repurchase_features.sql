{#- Repurchase features as of a set of cutoff dates, one row per (cutoff, predictable user).

    T is the as-of date: meta.repurchase.as_of, or the day of the latest purchase (the manual's
    reference date). Cutoffs are horizon_days apart: T itself (role 'score', no label), T - N
    ('validate') and T - 2N ... T - (1 + training_cutoffs) N ('train'). A row's label is a purchase
    in (cutoff, cutoff + N], so every training label ends on or before the validation cutoff and
    nothing a cutoff's features see comes after it: every feature reads purchases on or before
    its cutoff only.

    Features: the manual's 14 (amounts, counts in the last 7/30/90 days, days since the first and
    last purchase, purchase days, channels, the average interval and the repurchase ratio), plus
    category breadth, the category bought most (what people buy says whether they come back:
    consumables do, durables do not), the spend trend (last 90 days against the 90 before) and R/F/M quintiles
    within the cutoff. -#}
{%- set cfg = repurchase_config() -%}
{%- set n = cfg.horizon_days -%}
with lines as (
    select b.one_id, b.occurred_at, b.behavior_date, b.channel, b.item_id, b.behavior_amount
    from {{ ref('fct_behaviors') }} as b
    where b.event_type = '{{ cfg.purchase_type }}'
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
    {%- if cfg.as_of %}
    select cast('{{ cfg.as_of }}' as date) as t  -- one row, whatever the purchases
    {%- else %}
    select max(purchase_date) as t from purchases
    {%- endif %}
),

steps as (
    select 0 as k, 'score' as cutoff_role
    union all select 1, 'validate'
    {%- for k in range(2, cfg.training_cutoffs + 2) %}
    union all select {{ k }}, 'train'
    {%- endfor %}
),

cutoffs as (
    select s.k, s.cutoff_role, cast(r.t - {{ n }} * s.k as date) as cutoff_date
    from steps as s cross join reference as r
    where r.t is not null
),

history as (
    select
        c.cutoff_date,
        c.cutoff_role,
        p.one_id,
        count(*) as purchase_count,
        sum(p.amount) as total_amount,
        max(p.amount) as max_amount,
        min(p.amount) as min_amount,
        sum(case when p.purchase_date > c.cutoff_date - 7 then 1 else 0 end) as purchases_7d,
        sum(case when p.purchase_date > c.cutoff_date - 30 then 1 else 0 end) as purchases_30d,
        sum(case when p.purchase_date > c.cutoff_date - 90 then 1 else 0 end) as purchases_90d,
        sum(case when p.purchase_date > c.cutoff_date - 90 then p.amount else 0 end) as amount_90d,
        sum(case when p.purchase_date > c.cutoff_date - 180 and p.purchase_date <= c.cutoff_date - 90
                 then p.amount else 0 end) as amount_prev_90d,
        min(p.purchase_date) as first_date,
        max(p.purchase_date) as last_date,
        count(distinct p.purchase_date) as purchase_days,
        count(distinct p.channel) as channels
    from cutoffs as c
    inner join purchases as p on p.purchase_date <= c.cutoff_date
    group by c.cutoff_date, c.cutoff_role, p.one_id
),

bought as (
    select c.cutoff_date, l.one_id, pt.category, count(*) as lines
    from cutoffs as c
    inner join lines as l on l.behavior_date <= c.cutoff_date
    inner join {{ ref('product_tags') }} as pt on pt.item_id = l.item_id
    where pt.category is not null
    group by c.cutoff_date, l.one_id, pt.category
),

breadth as (
    select cutoff_date, one_id, count(*) as categories
    from bought
    group by cutoff_date, one_id
),

main_category as (
    {{ top_value_per('bought', 'cutoff_date, one_id', 'category', 'lines desc, category', 'main_category') }}
),

labels as (
    select distinct c.cutoff_date, p.one_id
    from cutoffs as c
    inner join purchases as p
        on p.purchase_date > c.cutoff_date and p.purchase_date <= c.cutoff_date + {{ n }}
    where c.k > 0
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
        cast(p.total_amount / p.purchase_count as {{ type_double() }}) as avg_amount,
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
        cast(coalesce(b.categories, 0) as integer) as categories,
        mc.main_category,
        cast((p.amount_90d + 1) / (p.amount_prev_90d + 1) as {{ type_double() }}) as spend_trend,
        cast(ntile(5) over (partition by p.cutoff_date order by p.days_since_last desc, p.one_id) as integer)
            as r_score,
        cast(ntile(5) over (partition by p.cutoff_date order by p.purchase_count, p.one_id) as integer)
            as f_score,
        cast(ntile(5) over (partition by p.cutoff_date order by p.total_amount, p.one_id) as integer)
            as m_score,
        case when p.cutoff_role = 'score' then null
             when l.one_id is not null then 1 else 0 end as label
    from predictable as p
    left join breadth as b on b.cutoff_date = p.cutoff_date and b.one_id = p.one_id
    left join main_category as mc on mc.cutoff_date = p.cutoff_date and mc.one_id = p.one_id
    left join labels as l on l.cutoff_date = p.cutoff_date and l.one_id = p.one_id
)

select * from final
