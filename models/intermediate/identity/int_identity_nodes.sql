{#- Every typed id the warehouse has seen, with a dense integer id for the graph algorithms
    (stable within one run only; one_id is the id that lasts). -#}
with links as (
    select * from {{ ref('int_identity_links') }}
),

customers as (
    select * from {{ ref('stg_shop__customers') }}
),

event_users as (
    -- one row per id seen in behaviour (ids loaded differently can normalise to one)
    select user_id_type, user_id, min(first_seen_at) as first_seen_at
    from {{ ref('stg_shop__behavior_user_ids') }}
    where user_id is not null
    group by user_id_type, user_id
),

reporters as (
    -- the people the event collector heard from, by the id their channel reports
    select user_id_type, user_id, min(occurred_at) as first_seen_at
    from {{ ref('stg_events__events') }}
    where user_id is not null
    group by user_id_type, user_id
),

keys as (
    select from_key as node_key, first_observed_at as seen_at from links
    union all
    select to_key, first_observed_at from links
    union all
    select {{ identity_key("'member_id'", 'customer_id') }}, registered_at from customers
    union all
    select {{ identity_key('user_id_type', 'user_id') }}, first_seen_at from event_users
    union all
    select {{ identity_key('user_id_type', 'user_id') }}, first_seen_at from reporters
),

distinct_keys as (
    select node_key, min(seen_at) as first_seen_at
    from keys
    group by node_key
),

final as (
    select
        row_number() over (order by {{ binary_sort('node_key') }}) as node_id,
        node_key,
        substr(node_key, 1, position(':' in node_key) - 1) as id_type,
        substr(node_key, position(':' in node_key) + 1) as id_value,
        first_seen_at
    from distinct_keys
)

select * from final
