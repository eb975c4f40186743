{#- Identity messages as links: the reporter's customerId (of its channel's customer_id_type) and
    each id it is known by, both in their canonical form. -#}
with source as (
    select * from {{ source('events', 'identity_links') }}
),

id_types as (
    select id_type, normalisation from {{ ref('id_types') }}
),

normalized as (
    select
        source.message_id,
        source.customer_id_type as left_id_type,
        {{ normalize_by_rule('left_rule.normalisation', 'source.customer_id') }} as left_id,
        source.id_type as right_id_type,
        {{ normalize_by_rule('right_rule.normalisation', 'source.id_value') }} as right_id,
        'event_identity' as link_source,
        source.received_at as observed_at
    from source
    left join id_types as left_rule on left_rule.id_type = source.customer_id_type
    left join id_types as right_rule on right_rule.id_type = source.id_type
)

select
    *,
    left_id is not null and right_id is not null
        and not (left_id_type = right_id_type and left_id = right_id) as is_usable
from normalized
