{#- The repurchase model's config.meta.repurchase (models/marts/ml/_ml__models.yml), checked:
    every error names the properties file and the key to fix. ml/repurchase.py reads the same
    block from the manifest, so the features and the model agree on it. -#}
{% macro repurchase_fail(message) -%}
    {%- set origin = model_origin() -%}
    {{ exceptions.raise_compiler_error(origin[0] ~ ': ' ~ origin[1] ~ ': meta.repurchase.' ~ message) }}
{%- endmacro %}

{% macro repurchase_config() -%}
    {#- dbt parses SQL before it reads properties files: the defaults then, the config at run time -#}
    {%- if not execute -%}
        {%- do return({'purchase_type': 'purchase', 'horizon_days': 30, 'training_cutoffs': 3,
                       'lookback_days': 365, 'as_of': none}) -%}
    {%- endif -%}
    {%- set cfg = model_meta().get('repurchase') -%}
    {%- if cfg is none or cfg is not mapping -%}
        {{ repurchase_fail("is missing; declare purchase_type, horizon_days and the cutoffs there") }}
    {%- endif -%}
    {%- set known = ['purchase_type', 'horizon_days', 'as_of', 'lookback_days', 'training_cutoffs',
                     'model'] -%}
    {%- for key in cfg -%}
        {%- if key not in known -%}
            {{ repurchase_fail(key ~ " is not a key (known: " ~ known | join(', ') ~ ")") }}
        {%- endif -%}
    {%- endfor -%}
    {%- set horizon = cfg.get('horizon_days', 30) -%}
    {%- if horizon is not number or horizon != (horizon | int) or horizon < 15 or horizon > 90 -%}
        {{ repurchase_fail("horizon_days must be a whole number of days from 15 to 90, not " ~ horizon) }}
    {%- endif -%}
    {%- set cutoffs = cfg.get('training_cutoffs', 3) -%}
    {%- if cutoffs is not number or cutoffs != (cutoffs | int) or cutoffs < 1 or cutoffs > 12 -%}
        {{ repurchase_fail("training_cutoffs must be a whole number from 1 to 12, not " ~ cutoffs) }}
    {%- endif -%}
    {%- set lookback = cfg.get('lookback_days', 365) -%}
    {%- if lookback is not number or lookback != (lookback | int) or lookback < 30 -%}
        {{ repurchase_fail("lookback_days must be a whole number of days >= 30, not " ~ lookback) }}
    {%- endif -%}
    {%- set as_of = cfg.get('as_of') -%}
    {%- if as_of is not none and not modules.re.match('^\d{4}-\d{2}-\d{2}$', as_of | string) -%}
        {{ repurchase_fail("as_of must be a date (YYYY-MM-DD) or left out for the latest purchase, not " ~ as_of) }}
    {%- endif -%}
    {%- do return({'purchase_type': cfg.get('purchase_type', 'purchase'), 'horizon_days': horizon | int,
                   'training_cutoffs': cutoffs | int, 'lookback_days': lookback | int,
                   'as_of': as_of}) -%}
{%- endmacro %}
