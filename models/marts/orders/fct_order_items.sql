with order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

orders as (
    select * from {{ ref('fct_orders') }}
),

products as (
    select * from {{ ref('stg_shop__products') }}
),

final as (
    select
        oi.order_item_id,
        oi.order_id,
        o.one_id,
        o.ordered_at,
        o.ordered_date,
        o.channel,
        o.is_paid,
        oi.item_id,
        p.category,
        p.brand,
        oi.quantity,
        oi.unit_price,
        oi.amount
    from order_items as oi
    inner join orders as o on o.order_id = oi.order_id
    left join products as p on p.item_id = oi.item_id
)

select * from final
