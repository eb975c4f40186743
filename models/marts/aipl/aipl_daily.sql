{#- One row per AIPL model, day and user in a stage; rules in _aipl__models.yml, logic in
    macros/aipl/aipl_daily.sql. Each run computes the days aipl_start..aipl_end (both default to
    the as-of date) and replaces them; earlier days stay, so the table keeps the daily history.
    Backfill: dbt run -s aipl_daily --vars '{aipl_start: 2026-06-01, aipl_end: 2026-06-30}'.
    On Spark the table is partitioned by stat_date and a run overwrites its days' partitions. -#}
{{ config(
    materialized='incremental',
    incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'append'),
    partition_by=(['stat_date'] if target.type == 'spark' else none),
    full_refresh=false,
    on_schema_change='fail',
    pre_hook="{{ aipl_clear_range() }}",
) }}

{{ aipl_daily() }}
