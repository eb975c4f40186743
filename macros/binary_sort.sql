{#- `expr` compared byte by byte, whatever the database's collation, so that ids minted from
    "the smallest key" are the same on every engine and every locale. -#}
{% macro binary_sort(expr) -%}
    {{ return(adapter.dispatch('binary_sort', 'openaudience')(expr)) }}
{%- endmacro %}

{% macro default__binary_sort(expr) -%}
    {{ expr }}
{%- endmacro %}

{% macro postgres__binary_sort(expr) -%}
    ({{ expr }} collate "C")
{%- endmacro %}
