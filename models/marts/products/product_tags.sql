{#- The product tag table: one row per item_id with the static attributes and the statistic
    tags declared in seeds/product_tag_catalogue.csv (is_statistic = true: recommendation
    training leaves them out). -#}
with products as (
    select * from {{ ref('stg_shop__products') }}
),

items as (
    select * from {{ ref('fct_order_items') }}
    where is_paid and {{ in_last_days('ordered_date', 90) }}
),

views as (
    select item_id, cast(sum(behavior_count) as bigint) as views_30d
    from {{ ref('fct_behaviors') }}
    where event_type = 'view' and item_id is not null and {{ in_last_days('behavior_date', 30) }}
    group by item_id
),

sales as (
    select
        item_id,
        cast(sum(quantity) as bigint) as sales_90d,
        sum(amount) as sales_amount_90d,
        count(distinct one_id) as buyers_90d
    from items
    group by item_id
),

final as (
    select
        p.item_id,
        p.item_name,
        p.category,
        p.brand,
        p.price,
        p.season,
        p.listed_at,
        coalesce(s.sales_90d, 0) as sales_90d,
        cast(coalesce(s.sales_amount_90d, 0) as {{ type_money() }}) as sales_amount_90d,
        coalesce(s.buyers_90d, 0) as buyers_90d,
        coalesce(v.views_30d, 0) as views_30d
    from products as p
    left join sales as s on s.item_id = p.item_id
    left join views as v on v.item_id = p.item_id
)

select * from final
