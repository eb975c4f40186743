-- Every run's funnel narrows (sent <= planned, delivered <= sent, opened and clicked <=
-- delivered) and the model's sent count is the engine's own count of the run.
with deliveries as (
    select * from {{ ref('fct_deliveries') }}
),

runs as (
    select run_id, sent from {{ source('delivery', 'delivery_runs') }}
    where status <> 'running'
)

select d.delivery_run_id, d.planned, d.sent, r.sent as engine_sent, d.delivered, d.opened, d.clicked
from deliveries as d
inner join runs as r on r.run_id = d.delivery_run_id
where d.sent > d.planned
   or d.delivered > d.sent
   or d.opened > d.delivered
   or d.clicked > d.delivered
   or d.sent <> r.sent
