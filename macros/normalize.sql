{#- Id normalisation. Which rule an id type follows is data: the `normalisation` column of the
    id-type registry, seeds/id_types.csv, which Python reads too (connectors/identifiers.py). The
    rules themselves are code, here and there, and tests/test_id_registry.py runs both over the
    same hostile corpus and requires equal results (NULL here = refused there).

    trim       white space off both ends (ASCII white space, U+00A0 and U+3000); empty is NULL
    lower      trimmed, ASCII letters lower-cased (the same on every engine and locale)
    upper      trimmed, ASCII letters upper-cased
    email      trimmed, ASCII-lower-cased, NULL without an @
    mobile_cn  the digits 0-9 alone, a leading 86 dropped, then an 11-digit mainland number or NULL
-#}

{#- `expr` without white space at either end: space, tab, LF, VT, FF, CR, U+00A0, U+3000. -#}
{% macro trim_id(expr) -%}
    {{ return(adapter.dispatch('trim_id', 'openaudience')(expr)) }}
{%- endmacro %}

{% macro default__trim_id(expr) -%}
    trim({{ expr }}, ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13) || chr(160) || chr(12288))
{%- endmacro %}

{#- Spark's chr() wraps at 256 and its trim() takes the characters first: the same set as
    escapes in the literal. -#}
{% macro spark__trim_id(expr) -%}
    trim(both '\u0020\u0009\u000A\u000B\u000C\u000D\u00A0\u3000' from {{ expr }})
{%- endmacro %}

{% macro _ascii_lower(expr) -%}
    translate({{ expr }}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
{%- endmacro %}

{% macro _ascii_upper(expr) -%}
    translate({{ expr }}, 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')
{%- endmacro %}

{#- A mainland mobile as 11 digits without the 86 prefix, or null when it cannot be one.
    "+86 138-0013 8000", "8613800138000" and " 13800138000 " all become 13800138000. -#}
{% macro normalize_mobile(expr) -%}
    {{ return(adapter.dispatch('normalize_mobile', 'openaudience')(expr)) }}
{%- endmacro %}

{% macro default__normalize_mobile(expr) -%}
    case
        when {{ regex_matches("regexp_replace(regexp_replace(" ~ expr ~ ", '[^0-9]', '', 'g'), '^86(1[0-9]{10})$', '\\1')", "'^1[3-9][0-9]{9}$'") }}
            then regexp_replace(regexp_replace({{ expr }}, '[^0-9]', '', 'g'), '^86(1[0-9]{10})$', '\1')
    end
{%- endmacro %}

{#- Spark's regexp_replace replaces every match (its fourth argument is a position) and writes
    a group as $1. -#}
{% macro spark__normalize_mobile(expr) -%}
    case
        when {{ regex_matches("regexp_replace(regexp_replace(" ~ expr ~ ", '[^0-9]', ''), '^86(1[0-9]{10})$', '$1')", "'^1[3-9][0-9]{9}$'") }}
            then regexp_replace(regexp_replace({{ expr }}, '[^0-9]', ''), '^86(1[0-9]{10})$', '$1')
    end
{%- endmacro %}

{#- An e-mail address trimmed and lower-cased, or null when blank or without an @. -#}
{% macro normalize_email(expr) -%}
    case when position('@' in {{ trim_id(expr) }}) > 0 then {{ _ascii_lower(trim_id(expr)) }} end
{%- endmacro %}

{#- A value in the canonical form of the rule `rule_expr` evaluates to (a registry column, or
    `id_rule(...)`); an unknown rule (an id type the registry lacks) trims. -#}
{% macro normalize_by_rule(rule_expr, value_expr) -%}
    case {{ rule_expr }}
        when 'mobile_cn' then {{ normalize_mobile(value_expr) }}
        when 'email' then {{ normalize_email(value_expr) }}
        when 'upper' then nullif({{ _ascii_upper(trim_id(value_expr)) }}, '')
        when 'lower' then nullif({{ _ascii_lower(trim_id(value_expr)) }}, '')
        else nullif({{ trim_id(value_expr) }}, '')
    end
{%- endmacro %}

{#- The registry's rule for one id type written as a SQL literal, e.g. id_rule("'imei'"). -#}
{% macro id_rule(id_type_literal) -%}
    (select normalisation from {{ ref('id_types') }} where id_type = {{ id_type_literal }})
{%- endmacro %}

{#- The key of a node in the identity graph: "<id_type>:<value>". -#}
{% macro identity_key(id_type_expr, value_expr) -%}
    ({{ id_type_expr }} || ':' || {{ value_expr }})
{%- endmacro %}
