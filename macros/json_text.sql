{#- The text of key `key` (a literal written in the model, never user input) of a JSON object held
    as text; null when the key is absent. -#}
{% macro json_text(json_expr, key) -%}
    {{ return(adapter.dispatch('json_text', 'openaudience')(json_expr, key)) }}
{%- endmacro %}

{% macro default__json_text(json_expr, key) -%}
    json_extract_string({{ json_expr }}, '$.{{ key }}')
{%- endmacro %}

{% macro postgres__json_text(json_expr, key) -%}
    (cast({{ json_expr }} as json) ->> '{{ key }}')
{%- endmacro %}

{% macro spark__json_text(json_expr, key) -%}
    get_json_object({{ json_expr }}, '$.{{ key }}')
{%- endmacro %}
