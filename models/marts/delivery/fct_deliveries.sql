with runs as (
    select * from {{ ref('stg_delivery__runs') }}
),

messages as (
    select * from {{ ref('int_delivery_messages_outcomes') }}
),

per_run as (
    select
        delivery_run_id,
        {{ delivery_measures() }}
    from messages
    group by delivery_run_id
),

counted as (
    select
        r.delivery_run_id,
        r.destination,
        r.channel,
        r.audience,
        r.audience_version,
        r.mode,
        r.trigger,
        r.status,
        r.started_at,
        r.finished_at,
        r.missing_id,
        r.already_sent,
        {% for c in ['planned', 'suppressed', 'capped', 'skipped', 'sent', 'failed', 'pending',
                     'delivered', 'opened', 'clicked', 'unsubscribed', 'converted'] -%}
        coalesce(m.{{ c }}, 0) as {{ c }},
        {% endfor -%}
        cast(coalesce(m.conversion_amount, 0) as {{ type_money() }}) as conversion_amount
    from runs as r
    left join per_run as m on m.delivery_run_id = r.delivery_run_id
),

final as (
    select
        *,
        {{ delivery_rates() }}
    from counted
)

select * from final
