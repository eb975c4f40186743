with log as (
    select * from {{ source('delivery', 'delivery_log') }}
)

select
    run_id || ':' || idempotency_key as delivery_message_id,
    run_id as delivery_run_id,
    idempotency_key,
    destination,
    channel,
    audience,
    audience_version,
    one_id,
    id_type,
    op,
    status,
    rule,
    attempts,
    error,
    planned_at,
    sent_at,
    cast(sent_at as date) as sent_date
from log
