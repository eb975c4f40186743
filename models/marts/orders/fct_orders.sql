with orders as (
    select * from {{ ref('stg_shop__orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

identities as (
    select * from {{ ref('dim_identities') }}
    where id_type = 'member_id'
),

lines as (
    select
        order_id,
        count(*) as line_count,
        cast(sum(quantity) as bigint) as units
    from order_items
    group by order_id
),

final as (
    select
        o.order_id,
        i.one_id,
        o.customer_id,
        o.ordered_at,
        o.ordered_date,
        o.channel,
        o.status,
        o.is_paid,
        o.total_amount,
        coalesce(l.line_count, 0) as line_count,
        coalesce(l.units, 0) as units
    from orders as o
    left join identities as i on i.id_value = o.customer_id
    left join lines as l on l.order_id = o.order_id
)

select * from final
