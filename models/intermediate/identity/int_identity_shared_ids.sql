{#- The merge guard. An id linked to more distinct ids of one type than that type's
    max_per_cluster (seeds/id_types.csv) is shared — a store tablet, a test e-mail. One row per
    shared id and neighbour type that tripped the guard; its links are kept out of merging. -#}
with links as (
    select * from {{ ref('int_identity_links') }}
),

nodes as (
    select * from {{ ref('int_identity_nodes') }}
),

id_types as (
    select * from {{ ref('id_types') }}
),

directed as (
    select from_key as node_key, to_key as neighbour_key from links
    union all
    select to_key, from_key from links
),

fan_out as (
    select
        d.node_key,
        n.id_type as neighbour_type,
        count(distinct d.neighbour_key) as neighbours
    from directed as d
    inner join nodes as n on n.node_key = d.neighbour_key
    group by d.node_key, n.id_type
),

final as (
    select
        f.node_key,
        f.neighbour_type,
        f.neighbours,
        t.max_per_cluster
    from fan_out as f
    inner join id_types as t on t.id_type = f.neighbour_type
    where f.neighbours > t.max_per_cluster
)

select * from final
