{{ config(materialized='view') }}

{#- Every event the collector took, with the person it belongs to, read live: a view over the
    collector's events, so that what arrived since the last build is in it too (event-triggered
    journeys read it within seconds of an event). The person is the one_id of the customerId in
    dim_identities, else the one_id of an id that an identity message linked to the customerId;
    null while neither is known (the next build resolves the new ids). -#}
with events as (
    select * from {{ ref('stg_events__events') }}
),

identities as (
    select id_type, id_value, one_id from {{ ref('dim_identities') }}
),

linked as (
    select
        links.left_id_type,
        links.left_id,
        min(identities.one_id) as one_id
    from {{ ref('stg_events__identity_links') }} as links
    inner join identities
        on identities.id_type = links.right_id_type and identities.id_value = links.right_id
    where links.is_usable
    group by links.left_id_type, links.left_id
)

select
    events.event_id,
    events.event_type,
    events.app_key,
    events.channel,
    events.user_id_type,
    events.user_id,
    coalesce(direct.one_id, linked.one_id) as one_id,
    events.occurred_at,
    events.received_at,
    events.attributes,
    events.object_attribute,
    events.object_value,
    events.item_id,
    events.amount
from events
left join identities as direct
    on direct.id_type = events.user_id_type and direct.id_value = events.user_id
left join linked
    on linked.left_id_type = events.user_id_type and linked.left_id = events.user_id
