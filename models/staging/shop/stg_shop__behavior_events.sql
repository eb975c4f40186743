with source as (
    select * from {{ source('shop', 'behavior_events') }}
),

id_types as (
    select id_type, normalisation from {{ ref('id_types') }}
),

final as (
    select
        trim(event_id) as event_id,
        user_id_type,
        {{ normalize_by_rule('registry.normalisation', 'source.user_id') }} as user_id,
        source.user_id as user_id_as_loaded,
        event_type,
        channel,
        occurred_at,
        cast(occurred_at as date) as occurred_date,
        coalesce(object_attribute, 'none') as object_attribute,
        coalesce(nullif(trim(object_value), ''), '') as object_value,
        nullif(trim(item_id), '') as item_id,
        event_count,
        cast(amount as {{ type_money() }}) as amount
    from source
    left join id_types as registry on registry.id_type = source.user_id_type
)

select * from final
