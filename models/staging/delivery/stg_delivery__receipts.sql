with receipts as (
    select * from {{ source('delivery', 'delivery_receipts') }}
)

select
    -- receipts carry no id of their own (a rejected one may lack even msg_id): every field
    md5(
        destination
        || '|' || coalesce(msg_id, '')
        || '|' || coalesce(idempotency_key, '')
        || '|' || coalesce(status_code, '')
        || '|' || coalesce(cast(send_time as {{ dbt.type_string() }}), '')
        || '|' || cast(received_at as {{ dbt.type_string() }})
        || '|' || verdict
        || '|' || coalesce(reason, '')
    ) as delivery_receipt_id,
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
