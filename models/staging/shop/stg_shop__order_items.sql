with source as (
    select * from {{ source('shop', 'order_items') }}
),

final as (
    select
        trim(order_item_id) as order_item_id,
        trim(order_id) as order_id,
        trim(item_id) as item_id,
        quantity,
        cast(unit_price as {{ type_money() }}) as unit_price,
        cast(amount as {{ type_money() }}) as amount
    from source
)

select * from final
