{#- The user tag wide table: one row per one_id with its ids and every tag of
    seeds/tag_catalogue.csv (tests/test_tag_catalogue.py keeps the two in step). -#}
with ids as (
    select * from {{ ref('int_users_ids_pivoted') }}
),

profiles as (
    select * from {{ ref('int_users_profiles_selected') }}
),

purchases as (
    select * from {{ ref('int_users_orders_aggregated') }}
),

behaviors as (
    select * from {{ ref('int_users_behaviors_aggregated') }}
),

final as (
    select
        -- ids
        ids.one_id,
        ids.member_id,
        ids.mobile,
        ids.email,
        ids.openid,
        ids.unionid,
        ids.imei,
        ids.idfa,
        ids.oaid,
        ids.id_count,
        ids.is_shared_identity,

        -- profile
        p.gender,
        cast(floor({{ dbt.datediff('p.birth_date', as_of_date(), 'day') }} / 365.25) as integer) as age,
        p.birth_date,
        p.city,
        p.member_level,
        p.registered_at,
        {{ dbt.datediff('p.registered_date', as_of_date(), 'day') }} as days_since_registration,
        case when ids.email is not null then substr(ids.email, position('@' in ids.email) + 1) end as email_domain,

        -- purchases
        o.first_purchase_at,
        o.last_purchase_at,
        {{ dbt.datediff('cast(o.last_purchase_at as date)', as_of_date(), 'day') }} as days_since_last_purchase,
        coalesce(o.orders_total, 0) as orders_total,
        coalesce(o.orders_30d, 0) as orders_30d,
        coalesce(o.orders_90d, 0) as orders_90d,
        coalesce(o.orders_365d, 0) as orders_365d,
        cast(coalesce(o.spend_total, 0) as {{ type_money() }}) as spend_total,
        cast(coalesce(o.spend_30d, 0) as {{ type_money() }}) as spend_30d,
        cast(coalesce(o.spend_90d, 0) as {{ type_money() }}) as spend_90d,
        cast(coalesce(o.spend_365d, 0) as {{ type_money() }}) as spend_365d,
        coalesce(o.purchase_days, 0) as purchase_days,
        o.avg_order_value,
        coalesce(o.refunds_365d, 0) as refunds_365d,
        o.favourite_category,
        o.favourite_brand,
        o.categories_bought,
        o.preferred_order_channel,

        -- behaviour
        b.last_active_at,
        b.last_login_at,
        {{ dbt.datediff('cast(b.last_login_at as date)', as_of_date(), 'day') }} as days_since_last_login,
        coalesce(b.logins_30d, 0) as logins_30d,
        coalesce(b.views_30d, 0) as views_30d,
        coalesce(b.add_to_cart_30d, 0) as add_to_cart_30d,
        coalesce(b.favourites_90d, 0) as favourites_90d,
        coalesce(b.shares_90d, 0) as shares_90d,
        coalesce(b.active_days_30d, 0) as active_days_30d,
        b.channels_used,
        b.last_channel,
        b.last_viewed_product
    from ids
    left join profiles as p on p.one_id = ids.one_id
    left join purchases as o on o.one_id = ids.one_id
    left join behaviors as b on b.one_id = ids.one_id
)

select * from final
