{#- One row per one_id with one id of each marketable type (the smallest when a person has
    several) and how many ids the person has. -#}
with identities as (
    select * from {{ ref('dim_identities') }}
),

final as (
    select
        one_id,
        min(case when id_type = 'member_id' then id_value end) as member_id,
        min(case when id_type = 'mobile' then id_value end) as mobile,
        min(case when id_type = 'email' then id_value end) as email,
        min(case when id_type = 'openid' then id_value end) as openid,
        min(case when id_type = 'unionid' then id_value end) as unionid,
        min(case when id_type = 'imei' then id_value end) as imei,
        min(case when id_type = 'idfa' then id_value end) as idfa,
        min(case when id_type = 'oaid' then id_value end) as oaid,
        count(*) as id_count,
        max(case when is_shared_id then 1 else 0 end) = 1 as is_shared_identity
    from identities
    group by one_id
)

select * from final
