{#- An incremental model that reads its own previous rows (dim_identities) and rewrites them all.
    DuckDB and PostgreSQL read the table itself: delete+insert runs in one transaction. Spark
    cannot overwrite a table a query reads, so the previous rows are copied aside first (a
    pre-hook), read from there and dropped after (a post-hook). -#}
{% macro previous_state() -%}
    {{ return(adapter.dispatch('previous_state', 'openaudience')()) }}
{%- endmacro %}

{% macro default__previous_state() -%}
    {{ this }}
{%- endmacro %}

{% macro spark__previous_state() -%}
    {{ this.incorporate(path={'identifier': this.identifier ~ '__previous'}) }}
{%- endmacro %}

{% macro keep_previous_state(columns) -%}
    {{ return(adapter.dispatch('keep_previous_state', 'openaudience')(columns)) }}
{%- endmacro %}

{% macro default__keep_previous_state(columns) -%}
    select 1
{%- endmacro %}

{% macro spark__keep_previous_state(columns) -%}
    {%- if execute and is_incremental() -%}
        create table {{ previous_state() }} using parquet as select {{ columns }} from {{ this }}
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{% macro drop_previous_state() -%}
    {{ return(adapter.dispatch('drop_previous_state', 'openaudience')()) }}
{%- endmacro %}

{% macro default__drop_previous_state() -%}
    select 1
{%- endmacro %}

{% macro spark__drop_previous_state() -%}
    drop table if exists {{ previous_state() }}
{%- endmacro %}
