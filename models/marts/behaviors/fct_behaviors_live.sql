{{ config(materialized='view') }}

{#- fct_behaviors and the collector's events that arrived since the build, at the same columns:
    what audiences read for the event codes of events/*.yml, so a `behavior:` leaf over an event
    sees today's events before the next build. An event of a person no build knows yet waits for
    the build that resolves them. -#}
select
    'b:' || cast(behavior_id as {{ dbt.type_string() }}) as behavior_key,
    one_id,
    occurred_at,
    behavior_date,
    event_type,
    channel,
    object_attribute,
    object_value,
    item_id,
    behavior_count,
    behavior_amount,
    'built' as behavior_source
from {{ ref('fct_behaviors') }}

union all

select
    'e:' || live.event_id as behavior_key,
    live.one_id,
    live.occurred_at,
    cast(live.occurred_at as date) as behavior_date,
    live.event_type,
    live.channel,
    live.object_attribute,
    live.object_value,
    live.item_id,
    cast(1 as bigint) as behavior_count,
    cast(live.amount as {{ type_money() }}) as behavior_amount,
    'live' as behavior_source
from {{ ref('fct_events_live') }} as live
where live.one_id is not null
    and not exists (
        select 1 from {{ ref('int_collector_events_built') }} as built
        where built.event_id = live.event_id
    )
