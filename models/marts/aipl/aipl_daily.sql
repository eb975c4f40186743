{#- One row per AIPL model, day and user in a stage; rules in _aipl__models.yml, logic in
    macros/aipl/aipl_daily.sql. Each run computes the days aipl_start..aipl_end (both default to
    the as-of date) and replaces them; earlier days stay, so the table keeps the daily history.
    Backfill: dbt run -s aipl_daily --vars '{aipl_start: 2026-06-01, aipl_end: 2026-06-30}'. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    full_refresh=false,
    on_schema_change='fail',
    pre_hook="{{ aipl_clear_range() }}",
) }}

{{ aipl_daily() }}
