{#- Staging for a media monitoring log (impressions or clicks): the same fields, device ids
    normalised like every other id. -#}
{% macro stg_media_log(source_table, key) %}
with source as (
    select * from {{ source('media', source_table) }}
),

final as (
    select
        trim({{ key }}) as {{ key }},
        media_name,
        monitor_campaign_name,
        campaign_id,
        creative_id,
        {{ normalize_by_rule(id_rule("'imei'"), 'imei') }} as imei,
        {{ normalize_by_rule(id_rule("'idfa'"), 'idfa') }} as idfa,
        {{ normalize_by_rule(id_rule("'oaid'"), 'oaid') }} as oaid,
        nullif(trim(android_id), '') as android_id,
        {{ normalize_by_rule(id_rule("'mac'"), 'mac') }} as mac,
        ip,
        user_agent,
        os,
        city,
        city_tier,
        occurred_at,
        cast(occurred_at as date) as occurred_date
    from source
)

select * from final
{% endmacro %}
