{#- The collector's events (events.events) as this build saw them: fct_behaviors holds exactly
    these, and fct_behaviors_live adds the ones that arrived since. Reading the same table keeps
    the two apart even when fct_behaviors is built without it (it then reads the older list, and
    the live view adds the rest): no event is counted twice or lost between them. -#}
select event_id
from {{ ref('stg_events__events') }}
