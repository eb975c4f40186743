with source as (
    select * from {{ source('media', 'media_impressions') }}
),

final as (
    select
        trim(impression_id) as impression_id,
        media_name,
        monitor_campaign_name,
        campaign_id,
        creative_id,
        {{ normalize_id("'imei'", 'imei') }} as imei,
        {{ normalize_id("'idfa'", 'idfa') }} as idfa,
        {{ normalize_id("'oaid'", 'oaid') }} as oaid,
        nullif(trim(android_id), '') as android_id,
        {{ normalize_id("'mac'", 'mac') }} as mac,
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
