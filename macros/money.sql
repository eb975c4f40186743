{#- Money is exact: DECIMAL(18, 2) on DuckDB, NUMERIC(18, 2) on PostgreSQL, the raw contract's
    "decimal" type (openaudience/core/schema/raw.py: MONEY_PRECISION, MONEY_SCALE). A double cannot
    hold 0.10, so 50.10 + 49.90 + 60.00 + 40.00 would sum to 199.99999999999997 and score below a
    200 breakpoint. Staging casts every amount to it, so sums, RFM monetary, tags and thresholds
    are exact on both engines. -#}
{% macro type_money() -%}
    decimal(18, 2)
{%- endmacro %}

{#- The mean of a non-negative amount over `count` rows, rounded half away from zero to the money
    scale and kept exact, so a threshold on it means the same on both engines. PostgreSQL divides
    NUMERIC exactly; DuckDB divides decimals as doubles (1.15 / 2 = 0.57499999999999996), so there
    the division is done on whole cents. -#}
{% macro money_average(amount, count) -%}
    {{ return(adapter.dispatch('money_average', 'openaudience')(amount, count)) }}
{%- endmacro %}

{% macro default__money_average(amount, count) -%}
    cast(round({{ amount }} / {{ count }}, 2) as {{ type_money() }})
{%- endmacro %}

{% macro duckdb__money_average(amount, count) -%}
    cast(
        cast((cast({{ amount }} * 100 as hugeint) * 2 + {{ count }}) // (2 * {{ count }}) as decimal(18, 0))
        * 0.01
        as {{ type_money() }}
    )
{%- endmacro %}
