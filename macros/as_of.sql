{#- The date behaviour windows end on: the `as_of` var, or today. -#}
{% macro as_of_date() -%}
    {%- set value = var('as_of', '') -%}
    {%- if value -%}
        cast('{{ value }}' as date)
    {%- else -%}
        current_date
    {%- endif -%}
{%- endmacro %}

{#- True when `date_expr` falls in the `days` days that end on the as-of date, inclusive. -#}
{% macro in_last_days(date_expr, days) -%}
    ({{ date_expr }} > {{ dbt.dateadd('day', -days, as_of_date()) }} and {{ date_expr }} <= {{ as_of_date() }})
{%- endmacro %}
