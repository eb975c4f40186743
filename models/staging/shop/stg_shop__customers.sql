with source as (
    select * from {{ source('shop', 'customers') }}
),

cleaned as (
    select
        trim(customer_id) as customer_id,
        {{ normalize_mobile('mobile') }} as mobile,
        {{ normalize_email('email') }} as email,
        nullif(trim(mobile), '') is not null as has_raw_mobile,
        coalesce(nullif(trim(gender), ''), 'unknown') as gender,
        birth_date,
        nullif(trim(city), '') as city,
        coalesce(nullif(trim(member_level), ''), 'none') as member_level,
        registered_at
    from source
),

final as (
    select
        customer_id,
        mobile,
        email,
        has_raw_mobile and mobile is null as has_invalid_mobile,
        gender,
        birth_date,
        city,
        member_level,
        registered_at,
        cast(registered_at as date) as registered_date
    from cleaned
)

select * from final
