{#- Layers live in plain schemas (staging, intermediate, marts, reference) on every engine,
    so SQL written against the warehouse reads the same everywhere. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
