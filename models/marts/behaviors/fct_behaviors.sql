{#- One row per user, time, behaviour type, channel and object (attribute, value and item id;
    the manual's grain rule):
    events that share all five are summed. Users are one_ids, so a person's device and member
    events land on the same person. The shop's behaviour events and the events the collector
    took (stg_events__events) meet here. -#}
with events as (
    select * from {{ ref('stg_shop__behavior_events') }}
),

identities as (
    select id_type, id_value, one_id from {{ ref('dim_identities') }}
),

-- each id as loaded, resolved to its person once (stg_shop__behavior_user_ids normalised it):
-- the events then join on the id as loaded, and no event's id is normalised again
loaded_ids as (
    select ids.user_id_type, ids.user_id_as_loaded, i.one_id
    from {{ ref('stg_shop__behavior_user_ids') }} as ids
    inner join identities as i on i.id_type = ids.user_id_type and i.id_value = ids.user_id
),

resolved as (
    select
        i.one_id,
        e.occurred_at,
        e.event_type,
        e.channel,
        e.object_attribute,
        e.object_value,
        e.item_id,
        e.event_count,
        e.amount
    from events as e
    inner join loaded_ids as i
        on i.user_id_type = e.user_id_type and i.user_id_as_loaded = e.user_id_as_loaded

    union all

    -- the events the collector took (events/*.yml), by the canonical id their channel reports
    select
        i.one_id,
        r.occurred_at,
        r.event_type,
        r.channel,
        r.object_attribute,
        r.object_value,
        r.item_id,
        r.event_count,
        r.amount
    from {{ ref('stg_events__events') }} as r
    -- the events this build saw (fct_behaviors_live adds those that arrived since)
    inner join {{ ref('int_collector_events_built') }} as built on built.event_id = r.event_id
    inner join identities as i on i.id_type = r.user_id_type and i.id_value = r.user_id
),

grained as (
    select
        one_id,
        occurred_at,
        event_type,
        channel,
        object_attribute,
        object_value,
        item_id,
        cast(sum(event_count) as bigint) as behavior_count,
        cast(sum(amount) as {{ type_money() }}) as behavior_amount,
        count(*) as source_events
    from resolved
    group by one_id, occurred_at, event_type, channel, object_attribute, object_value, item_id
),

final as (
    select
        -- md5 of the grain joined by the ASCII unit separator, kept as 16 bytes (a uuid; binary
        -- on Spark): cheaper to store, compare and test than 32 hex characters
        {{ hash_key(
            "concat(one_id, chr(31), occurred_at, chr(31), event_type, chr(31), channel, chr(31), "
            ~ "object_attribute, chr(31), object_value, chr(31), coalesce(item_id, ''))"
        ) }} as behavior_id,
        one_id,
        occurred_at,
        cast(occurred_at as date) as behavior_date,
        event_type,
        channel,
        object_attribute,
        object_value,
        item_id,
        behavior_count,
        behavior_amount,
        source_events
    from grained
)

select * from final
