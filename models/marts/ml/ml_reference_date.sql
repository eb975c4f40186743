{#- The models' as-of, one row: the date the run asked for (the as_of var, `oa build --as-of`, or
    today) and T, the day of the latest purchase on or before it (the manual's reference date).
    Repurchase features are cut at T and recommendation scores as of T, so one date sets both;
    when T is well before the requested date, the models say so (the purchases are stale). -#}
select
    {{ as_of_date() }} as requested_date,
    max(purchase_date) as reference_date,
    count(*) as purchase_lines,
    min(source) as source
from {{ ref('ml_purchases') }}
