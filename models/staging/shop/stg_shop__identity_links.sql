with source as (
    select * from {{ source('shop', 'identity_links') }}
),

id_types as (
    select id_type, normalisation from {{ ref('id_types') }}
),

normalized as (
    select
        trim(link_id) as link_id,
        left_id_type,
        {{ normalize_by_rule('left_rule.normalisation', 'source.left_id') }} as left_id,
        right_id_type,
        {{ normalize_by_rule('right_rule.normalisation', 'source.right_id') }} as right_id,
        coalesce(nullif(trim(source), ''), 'unknown') as link_source,
        observed_at
    from source
    left join id_types as left_rule on left_rule.id_type = source.left_id_type
    left join id_types as right_rule on right_rule.id_type = source.right_id_type
),

final as (
    select
        *,
        left_id is not null and right_id is not null
            and not (left_id_type = right_id_type and left_id = right_id) as is_usable
    from normalized
)

select * from final
