{#- Every behaviour type a behaviour row may have: the seed's (seeds/dim_behavior_types.csv) and
    the codes of the events the collector takes (events/*.yml, as last served). An event whose
    code is a seed type (say `purchase`) is that type. -#}
with seeded as (
    select event_type, label, is_conversion, 'seed' as defined_in
    from {{ ref('dim_behavior_types') }}
),

reported as (
    select event_code as event_type, name as label, false as is_conversion, 'events' as defined_in
    from {{ source('events', 'event_definitions') }}
    where event_code not in (select event_type from seeded)
)

select * from seeded
union all
select * from reported
