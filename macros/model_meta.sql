{#- The meta config of the model being compiled. dbt gives a unit test neither the tested
    model's meta nor the graph, so a unit test passes it as the var unit_test_meta (in the
    properties files a YAML anchor makes that the model's own meta). -#}
{% macro model_meta() -%}
    {%- if model.resource_type == 'unit_test' -%}
        {%- do return(var('unit_test_meta', {}) or {}) -%}
    {%- endif -%}
    {%- do return(model.config.meta or {}) -%}
{%- endmacro %}

{#- Where the model is declared and its name, for error messages. -#}
{% macro model_origin() -%}
    {%- do return([(model.patch_path or model.original_file_path) | replace('openaudience://', ''), model.name]) -%}
{%- endmacro %}
