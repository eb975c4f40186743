with source as (
    select * from {{ source('shop', 'identity_links') }}
),

normalized as (
    select
        trim(link_id) as link_id,
        left_id_type,
        {{ normalize_id('left_id_type', 'left_id') }} as left_id,
        right_id_type,
        {{ normalize_id('right_id_type', 'right_id') }} as right_id,
        coalesce(nullif(trim(source), ''), 'unknown') as link_source,
        observed_at
    from source
),

final as (
    select
        *,
        left_id is not null and right_id is not null
            and not (left_id_type = right_id_type and left_id = right_id) as is_usable
    from normalized
)

select * from final
