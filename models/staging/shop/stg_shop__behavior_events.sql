with source as (
    select * from {{ source('shop', 'behavior_events') }}
),

final as (
    select
        trim(event_id) as event_id,
        user_id_type,
        {{ normalize_id('user_id_type', 'user_id') }} as user_id,
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
)

select * from final
