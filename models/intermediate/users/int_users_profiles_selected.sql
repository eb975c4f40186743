{#- The member profile of each one_id. When duplicate accounts merged into one person, the most
    recently registered account speaks for the profile (ties: the smallest member id). -#}
with customers as (
    select * from {{ ref('stg_shop__customers') }}
),

identities as (
    select * from {{ ref('dim_identities') }}
    where id_type = 'member_id'
),

ranked as (
    select
        i.one_id,
        c.*,
        row_number() over (
            partition by i.one_id order by c.registered_at desc, c.customer_id
        ) as profile_rank
    from customers as c
    inner join identities as i on i.id_value = c.customer_id
),

final as (
    select
        one_id,
        customer_id,
        gender,
        birth_date,
        city,
        member_level,
        registered_at,
        registered_date
    from ranked
    where profile_rank = 1
)

select * from final
