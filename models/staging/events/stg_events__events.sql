{#- The collector's behaviour events in the shape of the shop's behaviour events: the event code is
    the behaviour type, the channel's app type is the channel, the reporter's customerId (of the
    channel's customer_id_type) in its canonical form, and the attributes item_id and amount
    (when the event defines them) as the object and the amount. -#}
with source as (
    select * from {{ source('events', 'events') }}
),

definitions as (
    select event_code, app_type from {{ source('events', 'event_definitions') }}
),

id_types as (
    select id_type, normalisation from {{ ref('id_types') }}
),

parsed as (
    select
        source.event_id,
        source.channel as app_key,
        source.event_code as event_type,
        coalesce(definitions.app_type, 'third_party') as channel,
        source.customer_id_type as user_id_type,
        {{ normalize_by_rule('registry.normalisation', 'source.customer_id') }} as user_id,
        source.customer_id as user_id_as_loaded,
        source.occurred_at,
        source.received_at,
        source.attributes,
        nullif(trim({{ json_text('source.attributes', 'item_id') }}), '') as item_id,
        -- the collector let only finite numbers through; the guard keeps the decimal in range
        cast({{ json_text('source.attributes', 'amount') }} as {{ type_double() }}) as amount_number
    from source
    left join definitions on definitions.event_code = source.event_code
    left join id_types as registry on registry.id_type = source.customer_id_type
),

final as (
    select
        event_id,
        app_key,
        event_type,
        channel,
        user_id_type,
        user_id,
        user_id_as_loaded,
        occurred_at,
        received_at,
        attributes,
        cast(occurred_at as date) as occurred_date,
        case when item_id is null then 'none' else 'product' end as object_attribute,
        coalesce(item_id, '') as object_value,
        item_id,
        1 as event_count,
        case when abs(amount_number) < 1e15
            then cast(amount_number as {{ type_money() }}) end as amount
    from parsed
)

select * from final
