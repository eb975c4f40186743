{#- Every pair of ids known to belong together, from the link table, from member records (a
    member's mobile and e-mail) and from the identity messages of the event collector, as
    undirected edges between node keys. -#}
with links as (
    select * from {{ ref('stg_shop__identity_links') }}
    where is_usable
),

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

pairs as (
    select left_id_type, left_id, right_id_type, right_id, link_source, observed_at
    from links

    union all

    select 'member_id', customer_id, 'mobile', mobile, 'member_profile', registered_at
    from customers
    where mobile is not null

    union all

    select 'member_id', customer_id, 'email', email, 'member_profile', registered_at
    from customers
    where email is not null

    union all

    -- identity messages the event collector took (RecieveUserMessage)
    select left_id_type, left_id, right_id_type, right_id, link_source, observed_at
    from {{ ref('stg_events__identity_links') }}
    where is_usable
),

oriented as (
    -- one orientation per pair so that A-B and B-A are the same edge
    select
        case when {{ binary_sort(identity_key('left_id_type', 'left_id')) }} < {{ identity_key('right_id_type', 'right_id') }}
            then {{ identity_key('left_id_type', 'left_id') }} else {{ identity_key('right_id_type', 'right_id') }} end as from_key,
        case when {{ binary_sort(identity_key('left_id_type', 'left_id')) }} < {{ identity_key('right_id_type', 'right_id') }}
            then {{ identity_key('right_id_type', 'right_id') }} else {{ identity_key('left_id_type', 'left_id') }} end as to_key,
        link_source,
        observed_at
    from pairs
),

final as (
    select
        from_key,
        to_key,
        min(observed_at) as first_observed_at,
        max(observed_at) as last_observed_at,
        count(*) as observations,
        min(link_source) as link_source
    from oriented
    group by from_key, to_key
)

select * from final
