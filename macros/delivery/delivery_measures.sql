{#- The counts and rates every delivery report shows, over int_delivery_messages_outcomes rows
    grouped by the caller. Rates are NULL where their denominator is 0:
    delivery = delivered / sent, open = opened / delivered, click = clicked / delivered,
    conversion = converted / sent, suppression = suppressed / planned. -#}
{% macro delivery_measures() -%}
    cast(count(*) as bigint) as planned,
    cast(sum(case when status = 'suppressed' then 1 else 0 end) as bigint) as suppressed,
    cast(sum(case when status = 'capped' then 1 else 0 end) as bigint) as capped,
    cast(sum(case when status = 'skipped' then 1 else 0 end) as bigint) as skipped,
    cast(sum(case when is_sent then 1 else 0 end) as bigint) as sent,
    cast(sum(case when status = 'failed' or is_failed_receipt then 1 else 0 end) as bigint) as failed,
    cast(sum(case when status = 'pending' then 1 else 0 end) as bigint) as pending,
    cast(sum(case when is_delivered then 1 else 0 end) as bigint) as delivered,
    cast(sum(case when is_opened then 1 else 0 end) as bigint) as opened,
    cast(sum(case when is_clicked then 1 else 0 end) as bigint) as clicked,
    cast(sum(case when is_unsubscribed then 1 else 0 end) as bigint) as unsubscribed,
    cast(sum(case when is_converted then 1 else 0 end) as bigint) as converted,
    cast(sum(conversion_amount) as {{ type_money() }}) as conversion_amount
{%- endmacro %}

{% macro delivery_rates() -%}
    {{ delivery_rate('delivered', 'sent') }} as delivery_rate,
    {{ delivery_rate('opened', 'delivered') }} as open_rate,
    {{ delivery_rate('clicked', 'delivered') }} as click_rate,
    {{ delivery_rate('converted', 'sent') }} as conversion_rate,
    {{ delivery_rate('suppressed', 'planned') }} as suppression_rate
{%- endmacro %}

{% macro delivery_rate(numerator, denominator) -%}
    case when {{ denominator }} = 0 then null
         else cast({{ numerator }} as {{ type_double() }}) / {{ denominator }} end
{%- endmacro %}
