{#- dbt-spark's listagg ignores the order (collect_list keeps none): here the values are sorted,
    which is the order every listagg of this project asks for (by the value itself or by its
    leading part). -#}
{% macro spark__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {%- set collected -%}array_sort(collect_list({{ measure }})){%- endset -%}
    {%- if limit_num -%}
        {%- set collected -%}slice({{ collected }}, 1, {{ limit_num }}){%- endset -%}
    {%- endif -%}
    {%- do return('array_join(' ~ collected ~ ', ' ~ delimiter_text ~ ')') -%}
{%- endmacro %}
