{#- The purchase lines both models learn from, one row per line: behaviour events of the purchase
    type (meta.repurchase.purchase_type), or paid order lines of a known person.

    meta.repurchase.purchase_source says which: `behaviors`, `orders`, or `auto` (the default):
    the behaviour events when there is any, the paid order lines otherwise. A shop that loads
    orders and order lines and no behaviour stream (the usual start) thus gets models; one whose
    behaviour stream carries its purchases keeps reading them. `source` says which one a row
    came from, and the models print it.

    Only purchases on or before the run's as-of date (the as_of var, or today) are read: what
    came after it does not exist for this run, so both models see the same past. -#}
{%- set cfg = repurchase_config(from_features=true) -%}
with events as (
    select
        cast(behavior_id as {{ dbt.type_string() }}) as purchase_id,
        one_id,
        occurred_at,
        behavior_date as purchase_date,
        channel,
        item_id,
        behavior_amount as amount,
        'behaviors' as source
    from {{ ref('fct_behaviors') }}
    where event_type = '{{ cfg.purchase_type }}' and one_id is not null
        and behavior_date <= {{ as_of_date() }}
),

orders as (
    select
        cast(order_item_id as {{ dbt.type_string() }}) as purchase_id,
        one_id,
        ordered_at as occurred_at,
        ordered_date as purchase_date,
        channel,
        item_id,
        amount,
        'orders' as source
    from {{ ref('fct_order_items') }}
    where is_paid and one_id is not null and ordered_date <= {{ as_of_date() }}
)

{% if cfg.purchase_source in ('auto', 'behaviors') %}
select * from events
{% endif %}
{% if cfg.purchase_source == 'auto' %}
union all
{% endif %}
{% if cfg.purchase_source in ('auto', 'orders') %}
select * from orders
{%- if cfg.purchase_source == 'auto' %}
where not exists (select 1 from events)
{%- endif %}
{% endif %}
