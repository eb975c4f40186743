-- Every member change of every run with what came of it: its receipts (the latest word on
-- delivered, opened, clicked) and whether the person bought within the conversion window.
with log as (
    select * from {{ ref('stg_delivery__log') }}
),

receipts as (
    select * from {{ ref('stg_delivery__receipts') }}
    where verdict = 'accepted'
),

orders as (
    select * from {{ ref('fct_orders') }}
    where is_paid
),

receipt_flags as (
    select
        destination,
        idempotency_key,
        max(case when status in ('delivered', 'opened', 'clicked') then 1 else 0 end) as is_delivered,
        max(case when status in ('opened', 'clicked') then 1 else 0 end) as is_opened,
        max(case when status = 'clicked' then 1 else 0 end) as is_clicked,
        max(case when status = 'failed' then 1 else 0 end) as is_failed_receipt,
        max(case when status = 'unsubscribed' then 1 else 0 end) as is_unsubscribed
    from receipts
    group by destination, idempotency_key
),

sent as (
    select * from log
    where status = 'sent' and op = 'add'
),

conversions as (
    select
        s.delivery_message_id,
        count(o.order_id) as orders_after,
        sum(o.total_amount) as amount_after
    from sent as s
    inner join orders as o
        on o.one_id = s.one_id
        and o.ordered_at > s.sent_at
        and o.ordered_at <= {{ dbt.dateadd('day', var('delivery_conversion_days'), 's.sent_at') }}
    group by s.delivery_message_id
),

final as (
    select
        l.delivery_message_id,
        l.delivery_run_id,
        l.destination,
        l.channel,
        l.audience,
        l.one_id,
        l.op,
        l.status,
        l.rule,
        l.attempts,
        l.planned_at,
        l.sent_at,
        l.sent_date,
        l.status = 'sent' as is_sent,
        coalesce(r.is_delivered, 0) = 1 and l.status = 'sent' as is_delivered,
        coalesce(r.is_opened, 0) = 1 and l.status = 'sent' as is_opened,
        coalesce(r.is_clicked, 0) = 1 and l.status = 'sent' as is_clicked,
        coalesce(r.is_failed_receipt, 0) = 1 and l.status = 'sent' as is_failed_receipt,
        coalesce(r.is_unsubscribed, 0) = 1 and l.status = 'sent' as is_unsubscribed,
        coalesce(c.orders_after, 0) > 0 as is_converted,
        cast(coalesce(c.amount_after, 0) as {{ type_money() }}) as conversion_amount
    from log as l
    left join receipt_flags as r
        on r.destination = l.destination and r.idempotency_key = l.idempotency_key
    left join conversions as c on c.delivery_message_id = l.delivery_message_id
)

select * from final
