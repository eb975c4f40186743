{#- The manual's flow identity, for every AIPL model and stage, from each model's first day to
    its last and over its last two days:
        N_start(X) = retained(X) + sum over Y != X of conv(X -> Y) + churn(X)
    where churn is "in X at the start, in no stage at the end". Each term is counted on its own;
    rows returned are the stages where the identity fails. -#}
with daily as (
    select aipl_model, stat_date, one_id, stage from {{ ref('aipl_daily') }}
),

dates as (
    select aipl_model, min(stat_date) as first_date, max(stat_date) as last_date
    from daily
    group by aipl_model
),

periods as (
    select aipl_model, first_date as start_date, last_date as end_date from dates
    union
    select d.aipl_model, max(x.stat_date) as start_date, d.last_date as end_date
    from dates as d
    inner join daily as x on x.aipl_model = d.aipl_model and x.stat_date < d.last_date
    group by d.aipl_model, d.last_date
),

starts as (
    select p.aipl_model, p.start_date, p.end_date, s.one_id, s.stage
    from periods as p
    inner join daily as s on s.aipl_model = p.aipl_model and s.stat_date = p.start_date
),

ends as (
    select p.aipl_model, p.start_date, p.end_date, e.one_id, e.stage
    from periods as p
    inner join daily as e on e.aipl_model = p.aipl_model and e.stat_date = p.end_date
),

n_start as (
    select aipl_model, start_date, end_date, stage, count(*) as n
    from starts group by aipl_model, start_date, end_date, stage
),

retained as (
    select s.aipl_model, s.start_date, s.end_date, s.stage, count(*) as n
    from starts as s
    inner join ends as e
        on e.aipl_model = s.aipl_model and e.start_date = s.start_date and e.end_date = s.end_date
        and e.one_id = s.one_id and e.stage = s.stage
    group by s.aipl_model, s.start_date, s.end_date, s.stage
),

converted as (
    select s.aipl_model, s.start_date, s.end_date, s.stage, count(*) as n
    from starts as s
    inner join ends as e
        on e.aipl_model = s.aipl_model and e.start_date = s.start_date and e.end_date = s.end_date
        and e.one_id = s.one_id and e.stage <> s.stage
    group by s.aipl_model, s.start_date, s.end_date, s.stage
),

churned as (
    select s.aipl_model, s.start_date, s.end_date, s.stage, count(*) as n
    from starts as s
    where not exists (
        select 1 from ends as e
        where e.aipl_model = s.aipl_model and e.start_date = s.start_date
            and e.end_date = s.end_date and e.one_id = s.one_id
    )
    group by s.aipl_model, s.start_date, s.end_date, s.stage
)

select
    n.aipl_model,
    n.start_date,
    n.end_date,
    n.stage,
    n.n as n_start,
    coalesce(r.n, 0) as retained,
    coalesce(c.n, 0) as converted,
    coalesce(x.n, 0) as churned
from n_start as n
left join retained as r using (aipl_model, start_date, end_date, stage)
left join converted as c using (aipl_model, start_date, end_date, stage)
left join churned as x using (aipl_model, start_date, end_date, stage)
where n.n <> coalesce(r.n, 0) + coalesce(c.n, 0) + coalesce(x.n, 0)
