-- Per channel and day planned (UTC): what was planned, held back, sent and what came of it.
with messages as (
    select * from {{ ref('int_delivery_messages_outcomes') }}
),

daily as (
    select
        channel || ':' || cast(cast(planned_at as date) as {{ dbt.type_string() }}) as channel_day_id,
        channel,
        cast(planned_at as date) as planned_date,
        {{ delivery_measures() }}
    from messages
    group by channel, cast(planned_at as date)
),

final as (
    select
        *,
        {{ delivery_rates() }}
    from daily
)

select * from final
