{#- The behaviour object dimension in the manual's all-in-one style: (id, attribute, value).
    Products come from the catalogue (with their item_id), categories and brands from the
    catalogue too, other objects (pages) from the behaviour seen. -#}
with products as (
    select * from {{ ref('stg_shop__products') }}
),

events as (
    select distinct object_attribute, object_value
    from {{ ref('stg_shop__behavior_events') }}
    where object_attribute not in ('product', 'category', 'brand', 'none')
),

objects as (
    select 'product' as object_attribute, item_name as object_value, item_id from products
    union all
    select distinct 'category', category, cast(null as {{ dbt.type_string() }}) from products where category is not null
    union all
    select distinct 'brand', brand, cast(null as {{ dbt.type_string() }}) from products where brand is not null
    union all
    select object_attribute, object_value, cast(null as {{ dbt.type_string() }}) from events
),

final as (
    select
        md5(object_attribute || '|' || object_value || '|' || coalesce(item_id, '')) as behavior_object_id,
        object_attribute,
        object_value,
        item_id
    from objects
)

select * from final
