{#- The repurchase model's config.meta.repurchase (models/marts/ml/_ml__models.yml), checked:
    every error names the properties file and the key to fix. ml/repurchase.py reads the same
    block from the manifest, so the features and the model agree on it; ml_purchases reads it
    from the graph (its purchase_type and purchase_source), so both models learn from the same
    purchases. -#}
{% macro repurchase_fail(message, origin=none) -%}
    {%- set origin = origin or model_origin() -%}
    {{ exceptions.raise_compiler_error(origin[0] ~ ': ' ~ origin[1] ~ ': meta.repurchase.' ~ message) }}
{%- endmacro %}

{% macro repurchase_config(from_features=false) -%}
    {#- dbt parses SQL before it reads properties files: the defaults then, the config at run time -#}
    {%- if not execute -%}
        {%- do return({'purchase_type': 'purchase', 'purchase_source': 'auto', 'horizon_days': 30,
                       'training_cutoffs': 3, 'cutoff_step_days': 30, 'lookback_days': 365}) -%}
    {%- endif -%}
    {%- set origin = none -%}
    {%- if from_features -%}
        {#- another model (ml_purchases) reading the block of ml_repurchase_features -#}
        {%- set node = graph.nodes.get('model.' ~ project_name ~ '.ml_repurchase_features') -%}
        {%- if node is none -%}
            {{ exceptions.raise_compiler_error("the model ml_repurchase_features, which holds meta.repurchase, is missing") }}
        {%- endif -%}
        {%- set origin = [(node.patch_path or node.original_file_path) | replace('openaudience://', ''), node.name] -%}
        {%- set cfg = (node.config.meta or {}).get('repurchase') -%}
    {%- else -%}
        {%- set cfg = model_meta().get('repurchase') -%}
    {%- endif -%}
    {%- if cfg is none or cfg is not mapping -%}
        {{ repurchase_fail("is missing; declare purchase_type, horizon_days and the cutoffs there", origin) }}
    {%- endif -%}
    {%- set known = ['purchase_type', 'purchase_source', 'horizon_days', 'as_of', 'lookback_days',
                     'training_cutoffs', 'cutoff_step_days', 'model'] -%}
    {%- for key in cfg -%}
        {%- if key not in known -%}
            {{ repurchase_fail(key ~ " is not a key (known: " ~ known | join(', ') ~ ")", origin) }}
        {%- endif -%}
    {%- endfor -%}
    {%- set horizon = cfg.get('horizon_days', 30) -%}
    {%- if horizon is not number or horizon != (horizon | int) or horizon < 15 or horizon > 365 -%}
        {{ repurchase_fail("horizon_days must be a whole number of days from 15 to 365, not " ~ horizon, origin) }}
    {%- endif -%}
    {%- set cutoffs = cfg.get('training_cutoffs', 3) -%}
    {%- if cutoffs is not number or cutoffs != (cutoffs | int) or cutoffs < 1 or cutoffs > 24 -%}
        {{ repurchase_fail("training_cutoffs must be a whole number from 1 to 24, not " ~ cutoffs, origin) }}
    {%- endif -%}
    {%- set step = cfg.get('cutoff_step_days', horizon) -%}
    {%- if step is not number or step != (step | int) or step < 7 or step > 365 -%}
        {{ repurchase_fail("cutoff_step_days must be a whole number of days from 7 to 365, not " ~ step, origin) }}
    {%- endif -%}
    {%- set lookback = cfg.get('lookback_days', 365) -%}
    {%- if lookback is not number or lookback != (lookback | int) or lookback < 30 -%}
        {{ repurchase_fail("lookback_days must be a whole number of days >= 30, not " ~ lookback, origin) }}
    {%- endif -%}
    {%- if 'as_of' in cfg -%}
        {{ repurchase_fail("as_of is gone: a run has one as-of date, the --as-of of oa build and oa nightly "
                           ~ "(the dbt var as_of), and both models take T, the day of the latest purchase "
                           ~ "on or before it (marts.ml_reference_date); remove as_of here", origin) }}
    {%- endif -%}
    {%- set purchase_type = cfg.get('purchase_type', 'purchase') -%}
    {#- it goes into SQL as a literal: a behaviour type's code, nothing else -#}
    {%- if purchase_type is not string or not modules.re.match('^[a-z][a-z0-9_]{0,62}$', purchase_type) -%}
        {{ repurchase_fail("purchase_type must be a behaviour type's code (lower case letters, digits, _), not " ~ purchase_type, origin) }}
    {%- endif -%}
    {%- set source = cfg.get('purchase_source', 'auto') -%}
    {%- if source not in ['auto', 'behaviors', 'orders'] -%}
        {{ repurchase_fail("purchase_source must be auto, behaviors or orders, not " ~ source, origin) }}
    {%- endif -%}
    {%- do return({'purchase_type': purchase_type, 'purchase_source': source, 'horizon_days': horizon | int,
                   'training_cutoffs': cutoffs | int, 'cutoff_step_days': step | int,
                   'lookback_days': lookback | int}) -%}
{%- endmacro %}
