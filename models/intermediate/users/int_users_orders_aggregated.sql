{#- Purchase tags per one_id from paid orders up to the as-of date. -#}
with orders as (
    select * from {{ ref('fct_orders') }}
    where one_id is not null and ordered_date <= {{ as_of_date() }}
),

items as (
    select * from {{ ref('fct_order_items') }}
    where one_id is not null and is_paid and ordered_date <= {{ as_of_date() }}
),

paid as (
    select * from orders where is_paid
),

order_facts as (
    select
        one_id,
        min(ordered_at) as first_purchase_at,
        max(ordered_at) as last_purchase_at,
        count(*) as orders_total,
        count(case when {{ in_last_days('ordered_date', 30) }} then 1 end) as orders_30d,
        count(case when {{ in_last_days('ordered_date', 90) }} then 1 end) as orders_90d,
        count(case when {{ in_last_days('ordered_date', 365) }} then 1 end) as orders_365d,
        cast(sum(total_amount) as {{ type_money() }}) as spend_total,
        cast(coalesce(sum(case when {{ in_last_days('ordered_date', 30) }} then total_amount end), 0)
            as {{ type_money() }}) as spend_30d,
        cast(coalesce(sum(case when {{ in_last_days('ordered_date', 90) }} then total_amount end), 0)
            as {{ type_money() }}) as spend_90d,
        cast(coalesce(sum(case when {{ in_last_days('ordered_date', 365) }} then total_amount end), 0)
            as {{ type_money() }}) as spend_365d,
        count(distinct ordered_date) as purchase_days
    from paid
    group by one_id
),

refunds as (
    select
        one_id,
        count(*) as refunds_365d
    from orders
    where status = 'refunded' and {{ in_last_days('ordered_date', 365) }}
    group by one_id
),

category_spend as (
    select one_id, category, sum(amount) as amount
    from items
    where category is not null
    group by one_id, category
),

favourite_category as (
    {{ top_value_per('category_spend', 'one_id', 'category', 'amount desc, category', 'favourite_category') }}
),

categories_bought as (
    select
        one_id,
        {{ dbt.listagg('category', "','", 'order by category') }} as categories_bought
    from category_spend
    group by one_id
),

brand_spend as (
    select one_id, brand, sum(amount) as amount
    from items
    where brand is not null
    group by one_id, brand
),

favourite_brand as (
    {{ top_value_per('brand_spend', 'one_id', 'brand', 'amount desc, brand', 'favourite_brand') }}
),

channel_orders as (
    select one_id, channel, count(*) as orders
    from paid
    group by one_id, channel
),

preferred_channel as (
    {{ top_value_per('channel_orders', 'one_id', 'channel', 'orders desc, channel', 'preferred_order_channel') }}
),

final as (
    select
        f.one_id,
        f.first_purchase_at,
        f.last_purchase_at,
        f.orders_total,
        f.orders_30d,
        f.orders_90d,
        f.orders_365d,
        f.spend_total,
        f.spend_30d,
        f.spend_90d,
        f.spend_365d,
        f.purchase_days,
        {{ money_average('f.spend_total', 'f.orders_total') }} as avg_order_value,
        coalesce(r.refunds_365d, 0) as refunds_365d,
        fc.favourite_category,
        fb.favourite_brand,
        cb.categories_bought,
        pc.preferred_order_channel
    from order_facts as f
    left join refunds as r on r.one_id = f.one_id
    left join favourite_category as fc on fc.one_id = f.one_id
    left join favourite_brand as fb on fb.one_id = f.one_id
    left join categories_bought as cb on cb.one_id = f.one_id
    left join preferred_channel as pc on pc.one_id = f.one_id
)

select * from final
