with receipts as (
    select * from {{ source('delivery', 'delivery_receipts') }}
)

select
    destination,
    msg_id,
    idempotency_key,
    status_code,
    status,
    send_time as sent_at,
    received_at,
    verdict,
    reason
from receipts
