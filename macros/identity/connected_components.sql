{#-
    Materialization `connected_components`: the model's SQL returns an edge list (src, dst) of
    bigint node ids; the result is a table (node_id, component_id) where component_id is the
    smallest node id reachable from node_id.

    Min-label propagation with pointer jumping, run as plain SQL statements so it works the same
    on every engine: each round a node takes the smallest label among itself and its neighbours,
    then the label of its label. It stops when a round changes nothing, and fails loudly when
    `identity_max_iterations` rounds are not enough (a chain longer than the cap allows).
-#}
{% materialization connected_components, default %}
    {%- set target_relation = this.incorporate(type='table') -%}
    {%- set max_iterations = config.get('max_iterations', var('identity_max_iterations', 60)) | int -%}

    {%- set scratch = {} -%}
    {%- for part in ['input', 'edges', 'labels', 'next', 'final'] -%}
        {%- do scratch.update({part: api.Relation.create(
                database=this.database, schema=this.schema,
                identifier=this.identifier ~ '__cc_' ~ part, type='table')}) -%}
    {%- endfor -%}

    {{ run_hooks(pre_hooks) }}

    {%- for rel in scratch.values() -%}
        {% do adapter.drop_relation(rel) %}
    {%- endfor -%}

    {% do run_query(get_create_table_as_sql(False, scratch['input'], sql)) %}
    {% do run_query(get_create_table_as_sql(False, scratch['edges'],
        'select src, dst from ' ~ scratch['input'] ~ ' where src <> dst union '
        ~ 'select dst as src, src as dst from ' ~ scratch['input'] ~ ' where src <> dst')) %}
    {% do run_query(get_create_table_as_sql(False, scratch['labels'],
        'select src as node_id, least(src, min(dst)) as label from ' ~ scratch['edges']
        ~ ' group by src')) %}

    {%- set state = namespace(converged=false, rounds=0) -%}
    {%- for round in range(max_iterations) -%}
        {%- if not state.converged -%}
            {% do run_query(get_create_table_as_sql(False, scratch['next'],
                'with neighbour_min as (select e.src as node_id, min(l.label) as label from '
                ~ scratch['edges'] ~ ' e join ' ~ scratch['labels'] ~ ' l on l.node_id = e.dst group by e.src), '
                ~ 'stepped as (select l.node_id, least(l.label, n.label) as label from '
                ~ scratch['labels'] ~ ' l join neighbour_min n on n.node_id = l.node_id) '
                ~ 'select s.node_id, least(s.label, p.label) as label from stepped s '
                ~ 'join stepped p on p.node_id = s.label')) %}
            {%- set changed = run_query('select count(*) from ' ~ scratch['next'] ~ ' n join '
                ~ scratch['labels'] ~ ' l on l.node_id = n.node_id where n.label <> l.label').columns[0].values()[0] -%}
            {% do adapter.drop_relation(scratch['labels']) %}
            {% do adapter.rename_relation(scratch['next'], scratch['labels']) %}
            {%- set state.rounds = round + 1 -%}
            {%- if changed | int == 0 -%}
                {%- set state.converged = true -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}

    {%- if not state.converged -%}
        {{ exceptions.raise_compiler_error(
            "connected_components: " ~ this ~ " did not converge in " ~ max_iterations
            ~ " rounds; raise the var identity_max_iterations or look for a very long chain of links") }}
    {%- endif -%}
    {{ log("connected_components: " ~ this ~ " converged in " ~ state.rounds ~ " rounds") }}

    {% call statement('main') -%}
        {{ get_create_table_as_sql(False, scratch['final'],
            'select node_id, label as component_id from ' ~ scratch['labels']) }}
    {%- endcall %}

    {% do adapter.drop_relation(target_relation) %}
    {% do adapter.rename_relation(scratch['final'], target_relation) %}
    {%- for part in ['input', 'edges', 'labels'] -%}
        {% do adapter.drop_relation(scratch[part]) %}
    {%- endfor -%}

    {{ run_hooks(post_hooks) }}
    {% do adapter.commit() %}
    {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
