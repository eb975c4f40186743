{#- A mainland mobile as 11 digits without the 86 prefix, or null when it cannot be one.
    "+86 138-0013 8000", "8613800138000" and " 13800138000 " all become 13800138000. -#}
{% macro normalize_mobile(expr) -%}
    case
        when {{ regex_matches("regexp_replace(regexp_replace(" ~ expr ~ ", '[^0-9]', '', 'g'), '^86(1[0-9]{10})$', '\\1')", "'^1[3-9][0-9]{9}$'") }}
            then regexp_replace(regexp_replace({{ expr }}, '[^0-9]', '', 'g'), '^86(1[0-9]{10})$', '\1')
    end
{%- endmacro %}

{#- An e-mail address trimmed and lower-cased, or null when blank. -#}
{% macro normalize_email(expr) -%}
    nullif(lower(trim({{ expr }})), '')
{%- endmacro %}

{#- Any typed id in its canonical form: mobiles and e-mails as above, IDFA upper-case,
    other device and account ids trimmed (and lower-cased where case carries no meaning). -#}
{% macro normalize_id(id_type_expr, value_expr) -%}
    case {{ id_type_expr }}
        when 'mobile' then {{ normalize_mobile(value_expr) }}
        when 'email' then {{ normalize_email(value_expr) }}
        when 'idfa' then nullif(upper(trim({{ value_expr }})), '')
        when 'oaid' then nullif(lower(trim({{ value_expr }})), '')
        when 'mac' then nullif(lower(trim({{ value_expr }})), '')
        else nullif(trim({{ value_expr }}), '')
    end
{%- endmacro %}

{#- The key of a node in the identity graph: "<id_type>:<value>". -#}
{% macro identity_key(id_type_expr, value_expr) -%}
    ({{ id_type_expr }} || ':' || {{ value_expr }})
{%- endmacro %}
