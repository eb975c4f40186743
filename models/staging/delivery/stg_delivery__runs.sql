with runs as (
    select * from {{ source('delivery', 'delivery_runs') }}
)

select
    run_id as delivery_run_id,
    destination,
    channel,
    audience,
    audience_version,
    mode,
    id_type,
    id_form,
    trigger,
    status,
    missing_id,
    already_sent,
    started_at,
    finished_at,
    error
from runs
