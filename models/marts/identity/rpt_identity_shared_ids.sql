with shared as (
    select * from {{ ref('int_identity_shared_ids') }}
),

identities as (
    select * from {{ ref('dim_identities') }}
),

tripped as (
    select
        node_key,
        {{ dbt.listagg("neighbour_type || ':' || cast(neighbours as " ~ dbt.type_string() ~ ") || '>' || cast(max_per_cluster as " ~ dbt.type_string() ~ ")", "', '", 'order by neighbour_type') }} as tripped_by,
        max(neighbours) as max_neighbours
    from shared
    group by node_key
),

final as (
    select
        t.node_key,
        i.id_type,
        i.id_value,
        t.tripped_by,
        t.max_neighbours,
        i.one_id
    from tripped as t
    inner join identities as i on i.node_key = t.node_key
)

select * from final
