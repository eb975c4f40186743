{#- The first `value` of each `partition_by` group in `order_by` order, as a select:
    one row per group, columns (partition_by, alias). -#}
{% macro top_value_per(relation, partition_by, value, order_by, alias) -%}
    select {{ partition_by }}, {{ value }} as {{ alias }}
    from (
        select
            {{ partition_by }},
            {{ value }},
            row_number() over (partition by {{ partition_by }} order by {{ order_by }}) as rank_in_group
        from {{ relation }}
    ) as ranked
    where rank_in_group = 1
{%- endmacro %}
