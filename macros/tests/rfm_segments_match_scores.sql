{#- Every scored user of an RFM model sits in exactly one of the eight types, and it is the right
    one: the code is recomputed from the scores and the comparison values, the type is looked up
    in rfm_segments, and a 'mean' comparison must equal the mean score over the model's users.
    Returns the offending rows. -#}
{% test rfm_segments_match_scores(model) %}
{%- set node = [] if not execute else (graph.nodes.values() | selectattr('resource_type', 'equalto', 'model')
                | selectattr('alias', 'equalto', model.identifier) | list) -%}
{%- set comparison = ((node[0].config.meta.rfm or {}).get('comparison') or {}) if node else {} -%}
with scored as (
    select * from {{ model }}
),

expected as (
    select
        s.one_id,
        s.rfm_code,
        s.rfm_segment,
        case when s.r_score >= s.r_comparison then '1' else '0' end
        || case when s.f_score >= s.f_comparison then '1' else '0' end
        || case when s.m_score >= s.m_comparison then '1' else '0' end as recomputed_code,
        g.rfm_segment as segment_of_code,
        s.r_comparison - avg(s.r_score) over () as r_mean_gap,
        s.f_comparison - avg(s.f_score) over () as f_mean_gap,
        s.m_comparison - avg(s.m_score) over () as m_mean_gap
    from scored as s
    left join {{ ref('rfm_segments') }} as g on g.rfm_code = s.rfm_code
)

select *
from expected
where rfm_code is null
    or rfm_code <> recomputed_code
    or segment_of_code is null
    or rfm_segment <> segment_of_code
{%- for metric, prefix in [('recency_days', 'r'), ('frequency', 'f'), ('monetary', 'm')] %}
    {%- if comparison.get(metric, 'mean') == 'mean' %}
    or abs({{ prefix }}_mean_gap) > 1e-9
    {%- endif %}
{%- endfor %}
{% endtest %}
