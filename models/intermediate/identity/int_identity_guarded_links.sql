{#- The identity graph's edges as integer node ids, without the links of shared ids
    (int_identity_shared_ids): those are kept out of merging. -#}
with links as (
    select * from {{ ref('int_identity_links') }}
),

nodes as (
    select * from {{ ref('int_identity_nodes') }}
),

shared_keys as (
    select distinct node_key from {{ ref('int_identity_shared_ids') }}
),

final as (
    select
        a.node_id as src,
        b.node_id as dst
    from links as l
    inner join nodes as a on a.node_key = l.from_key
    inner join nodes as b on b.node_key = l.to_key
    left join shared_keys as sa on sa.node_key = l.from_key
    left join shared_keys as sb on sb.node_key = l.to_key
    where sa.node_key is null and sb.node_key is null
)

select * from final
