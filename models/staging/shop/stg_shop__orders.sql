with source as (
    select * from {{ source('shop', 'orders') }}
),

final as (
    select
        trim(order_id) as order_id,
        trim(customer_id) as customer_id,
        ordered_at,
        cast(ordered_at as date) as ordered_date,
        channel,
        status,
        status = 'paid' as is_paid,
        cast(total_amount as {{ type_money() }}) as total_amount
    from source
)

select * from final
