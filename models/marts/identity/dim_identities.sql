{{
    config(
        materialized='incremental',
        unique_key='node_key',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'delete+insert'),
        full_refresh=false,
        pre_hook=["{{ drop_previous_state() }}", "{{ keep_previous_state('node_key, one_id') }}"],
        post_hook=["{{ drop_previous_state() }}"],
    )
}}

{#-
    Every typed id → one_id. one_id is stable across runs:
    - a cluster that grows keeps its one_id;
    - when a new link joins clusters, the merged cluster keeps the one_id held by most of its ids
      (ties: the smallest one_id); the others' ids move to it;
    - when a cluster splits, the part holding most of its ids keeps the one_id;
    - a new cluster gets 'oa_' + the first 20 hex digits of md5 of its smallest id key.
    The table is never rebuilt from scratch (full_refresh=false): previous ids are the memory.
-#}

with nodes as (
    select * from {{ ref('int_identity_nodes') }}
),

components as (
    select * from {{ ref('int_identity_components') }}
),

shared as (
    select
        node_key,
        max(neighbours) as shared_with
    from {{ ref('int_identity_shared_ids') }}
    group by node_key
),

id_types as (
    select * from {{ ref('id_types') }}
),

previous as (
    {% if is_incremental() %}
    select node_key, one_id from {{ previous_state() }}
    {% else %}
    select node_key, cast(null as {{ dbt.type_string() }}) as one_id from nodes where 1 = 0
    {% endif %}
),

placed as (
    -- ids without any (guarded) link are a component of their own
    select
        n.node_id,
        n.node_key,
        n.id_type,
        n.id_value,
        n.first_seen_at,
        coalesce(c.component_id, n.node_id) as component_id
    from nodes as n
    left join components as c on c.node_id = n.node_id
),

claims as (
    select
        p.component_id,
        prev.one_id,
        count(*) as holders
    from placed as p
    inner join previous as prev on prev.node_key = p.node_key
    group by p.component_id, prev.one_id
),

claims_won as (
    -- a previous one_id goes to the component that holds most of its ids
    select
        component_id,
        one_id,
        holders,
        row_number() over (partition by one_id order by holders desc, component_id) as id_rank
    from claims
),

kept as (
    select
        component_id,
        one_id,
        row_number() over (partition by component_id order by holders desc, {{ binary_sort('one_id') }}) as component_rank
    from claims_won
    where id_rank = 1
),

anchors as (
    select
        component_id,
        min({{ binary_sort('node_key') }}) as anchor_key,
        count(*) as cluster_size
    from placed
    group by component_id
),

minted as (
    select
        a.component_id,
        a.cluster_size,
        k.one_id as kept_one_id,
        'oa_' || substr(md5(a.anchor_key), 1, 20) as fresh_one_id,
        'oa_' || substr(md5('split:' || a.anchor_key), 1, 20) as fallback_one_id
    from anchors as a
    left join kept as k on k.component_id = a.component_id and k.component_rank = 1
),

resolved as (
    select
        m.component_id,
        m.cluster_size,
        case
            when m.kept_one_id is not null then m.kept_one_id
            -- the fresh id was minted before for a cluster that kept it elsewhere
            when exists (select 1 from kept as k where k.one_id = m.fresh_one_id) then m.fallback_one_id
            else m.fresh_one_id
        end as one_id
    from minted as m
),

type_counts as (
    select component_id, id_type, count(*) as ids_of_type
    from placed
    group by component_id, id_type
),

oversized as (
    select distinct tc.component_id
    from type_counts as tc
    inner join id_types as t on t.id_type = tc.id_type
    where tc.ids_of_type > t.max_per_cluster
),

final as (
    select
        p.node_key,
        p.id_type,
        p.id_value,
        r.one_id,
        r.cluster_size,
        s.node_key is not null as is_shared_id,
        coalesce(s.shared_with, 0) as shared_with,
        o.component_id is not null as is_oversized_cluster,
        p.first_seen_at,
        {{ dbt.current_timestamp() }} as resolved_at
    from placed as p
    inner join resolved as r on r.component_id = p.component_id
    left join shared as s on s.node_key = p.node_key
    left join oversized as o on o.component_id = p.component_id
)

select * from final
