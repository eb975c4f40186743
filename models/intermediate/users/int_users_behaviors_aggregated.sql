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
        cast(coalesce(sum(case when event_type = 'login' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as logins_30d,
        cast(coalesce(sum(case when event_type = 'view' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as views_30d,
        cast(coalesce(sum(case when event_type = 'add_to_cart' and {{ in_last_days('behavior_date', 30) }} then behavior_count end), 0) as bigint) as add_to_cart_30d,
        cast(coalesce(sum(case when event_type = 'favourite' and {{ in_last_days('behavior_date', 90) }} then behavior_count end), 0) as bigint) as favourites_90d,
        cast(coalesce(sum(case when event_type = 'share' and {{ in_last_days('behavior_date', 90) }} then behavior_count end), 0) as bigint) as shares_90d,
        count(distinct case when {{ in_last_days('behavior_date', 30) }} then behavior_date end) as active_days_30d
    from behaviors
    group by one_id
),

channels as (
    select
        one_id,
        {{ dbt.listagg('channel', "','", 'order by channel') }} as channels_used
    from (select distinct one_id, channel from behaviors) as used
    group by one_id
),

last_events as (
    -- the channel of the latest behaviour (ties: the first channel alphabetically); a join back
    -- on the latest time instead of a window over every behaviour row
    select
        b.one_id,
        min(b.channel) as last_channel
    from behaviors as b
    inner join facts as f on f.one_id = b.one_id and b.occurred_at = f.last_active_at
    group by b.one_id
),

product_views as (
    select one_id, occurred_at, object_value
    from behaviors
    where event_type = 'view' and object_attribute = 'product'
),

last_view_times as (
    select one_id, max(occurred_at) as last_viewed_at
    from product_views
    group by one_id
),

last_views as (
    select
        v.one_id,
        min(v.object_value) as last_viewed_product
    from product_views as v
    inner join last_view_times as t on t.one_id = v.one_id and v.occurred_at = t.last_viewed_at
    group by v.one_id
),

final as (
    select
        f.*,
        c.channels_used,
        le.last_channel,
        lv.last_viewed_product
    from facts as f
    left join channels as c on c.one_id = f.one_id
    left join last_events as le on le.one_id = f.one_id
    left join last_views as lv on lv.one_id = f.one_id
)

select * from final
