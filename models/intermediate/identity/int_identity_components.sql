{{ config(materialized='connected_components') }}

{#- Connected components of the guarded identity graph: (node_id, component_id). -#}
select src, dst from {{ ref('int_identity_guarded_links') }}
