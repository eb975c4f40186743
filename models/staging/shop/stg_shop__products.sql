with source as (
    select * from {{ source('shop', 'products') }}
),

final as (
    select
        trim(item_id) as item_id,
        trim(name) as item_name,
        nullif(trim(category), '') as category,
        nullif(trim(brand), '') as brand,
        cast(price as {{ type_money() }}) as price,
        season,
        listed_at,
        cast(listed_at as date) as listed_date
    from source
)

select * from final
