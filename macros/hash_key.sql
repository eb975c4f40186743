{#- A 16-byte key from the md5 of `expr` (a text expression): a uuid where the engine has the
    type, raw bytes on Spark. -#}
{% macro hash_key(expr) -%}
    {{ return(adapter.dispatch('hash_key', 'openaudience')(expr)) }}
{%- endmacro %}

{% macro default__hash_key(expr) -%}
    cast(md5({{ expr }}) as uuid)
{%- endmacro %}

{% macro spark__hash_key(expr) -%}
    unhex(md5({{ expr }}))
{%- endmacro %}
