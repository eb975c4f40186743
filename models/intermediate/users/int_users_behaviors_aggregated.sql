{#- Behaviour tags per one_id from fct_behaviors up to the as-of date. -#}
with behaviors as (
    select * from {{ ref('fct_behaviors') }}
    where behavior_date <= {{ as_of_date() }}
),

facts as (
    select
        one_id,
        max(occurred_at) as last_active_at,
        max(case when event_type = 'login' then occurred_at end) as last_login_at,
        max(case when event_type = 'view' and object_attribute = 'product' then occurred_at end) as last_product_view_at,
        cast(coalesce(sum(case when event_type = 'login' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as logins_30d,
        cast(coalesce(sum(case when event_type = 'view' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as views_30d,
        cast(coalesce(sum(case when event_type = 'add_to_cart' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as add_to_cart_30d,
        cast(coalesce(sum(case when event_type = 'favourite' and {{ in_last_days('behavior_date', 90) }} then behavior_count end), 0) as bigint) as favourites_90d,
        cast(coalesce(sum(case when event_type = 'share' and {{ in_last_days('behavior_date', 90) }} then behavior_count end), 0) as bigint) as shares_90d,
        count(distinct case when {{ in_last_days('behavior_date', 30) }} then behavior_date end) as active_days_30d
    from behaviors
    group by one_id
),

channel_last_seen as (
    -- one row per user and channel: the list of channels and the latest channel both come
    -- from this small table instead of another pass over every behaviour
    select one_id, channel, max(occurred_at) as last_seen_at
    from behaviors
    group by one_id, channel
),

channels as (
    select
        c.one_id,
        {{ dbt.listagg('c.channel', "','", 'order by c.channel') }} as channels_used,
        min(case when c.last_seen_at = f.last_active_at then c.channel end) as last_channel
    from channel_last_seen as c
    inner join facts as f on f.one_id = c.one_id
    group by c.one_id
),

last_views as (
    -- the product viewed last (ties: alphabetical)
    select
        b.one_id,
        min(b.object_value) as last_viewed_product
    from behaviors as b
    inner join facts as f
        on f.one_id = b.one_id
        and b.occurred_at = f.last_product_view_at
    where b.event_type = 'view' and b.object_attribute = 'product'
    group by b.one_id
),

final as (
    select
        f.one_id,
        f.last_active_at,
        f.last_login_at,
        f.logins_30d,
        f.views_30d,
        f.add_to_cart_30d,
        f.favourites_90d,
        f.shares_90d,
        f.active_days_30d,
        c.channels_used,
        c.last_channel,
        v.last_viewed_product
    from facts as f
    left join channels as c on c.one_id = f.one_id
    left join last_views as v on v.one_id = f.one_id
)

select * from final
