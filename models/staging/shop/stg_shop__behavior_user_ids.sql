{#- One row per user id as loaded in behaviour events (by its id type), with the id normalised per
    its type and when it was first seen. A million people's events carry about 1.4M distinct ids
    in 25M events: normalising each id once here, instead of once per event in every model that
    reads events, is most of what resolving events to people costs. A table, not a view, for
    that reason. -#}
{{ config(materialized='table') }}

with source as (
    select user_id_type, user_id, occurred_at from {{ source('shop', 'behavior_events') }}
),

loaded_ids as (
    select user_id_type, user_id, min(occurred_at) as first_seen_at, count(*) as events
    from source
    where user_id is not null and user_id_type is not null
    group by user_id_type, user_id
),

id_types as (
    select id_type, normalisation from {{ ref('id_types') }}
),

final as (
    select
        loaded_ids.user_id_type,
        loaded_ids.user_id as user_id_as_loaded,
        {{ normalize_by_rule('registry.normalisation', 'loaded_ids.user_id') }} as user_id,
        loaded_ids.first_seen_at,
        loaded_ids.events
    from loaded_ids
    left join id_types as registry on registry.id_type = loaded_ids.user_id_type
)

select * from final
