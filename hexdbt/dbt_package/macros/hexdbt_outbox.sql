{#- hexdbt's on-run-end hook (the outbox format is version 1; docs/hook.md).

    on-run-end: "{{ hexdbt_on_run_end(results) }}"

  Writes one entry per dbt invocation to the outbox table: the invocation, every node it ran
  (status, timing, message), the data nodes with what hexdbt's selectors read, and the exposures
  that declare Hex apps. `hexdbt relay` reads the entries with the same dbt profile and triggers
  Hex from them. The entry is one JSON text split into numbered chunks, so that no statement
  outgrows a warehouse's limit; an entry is complete when all its chunks are there.

  Vars: hexdbt_outbox_schema (default: <target schema>_hexdbt), hexdbt_outbox_table (default:
  hexdbt_outbox), hexdbt_outbox_chunk_chars (default 100000), hexdbt_config_keys (the node config
  keys written for config.<key> selectors; default [materialized]).
-#}

{% macro hexdbt_on_run_end(results) -%}
  {%- if execute -%}
    {%- set relation = hexdbt_outbox_relation() -%}
    {%- set chunk_chars = var('hexdbt_outbox_chunk_chars', 100000) -%}
    {%- if chunk_chars is not number or chunk_chars < 1000 -%}
      {{ exceptions.raise_compiler_error(
           "hexdbt on-run-end hook: var hexdbt_outbox_chunk_chars must be a number of at least 1000,"
           ~ " not " ~ chunk_chars ~ ": fix it in dbt_project.yml or --vars") }}
    {%- endif -%}
    {%- set entry = tojson(hexdbt_outbox_entry(results)) -%}
    {%- set chunks = [] -%}
    {%- for start in range(0, entry | length, chunk_chars) -%}
      {%- do chunks.append(entry[start:start + chunk_chars]) -%}
    {%- endfor -%}
    {%- set written_at = modules.datetime.datetime.now(modules.pytz.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ') -%}
    {%- do adapter.dispatch('hexdbt_create_outbox')(relation) -%}
    {%- for chunk in chunks -%}
      {%- do hexdbt_execute(adapter.dispatch('hexdbt_insert_chunk')(
            relation, invocation_id, loop.index0, chunks | length, written_at, chunk)) -%}
    {%- endfor -%}
    {#- hexdbt_execute opened a transaction where the adapter has them (a no-op elsewhere). -#}
    {%- do adapter.commit() -%}
    {{- log("hexdbt: wrote invocation " ~ invocation_id ~ " to " ~ relation ~ " ("
            ~ chunks | length ~ " chunk(s))") -}}
  {%- endif -%}
{%- endmacro %}


{#- A statement in the hook's transaction, begun when none is open: creating the schema commits
    the one dbt had begun, and run_query begins none, so the final commit would find none open. -#}
{% macro hexdbt_execute(sql) -%}
  {%- call statement('hexdbt_outbox', auto_begin=true) -%}{{ sql }}{%- endcall -%}
{%- endmacro %}


{% macro hexdbt_outbox_relation() -%}
  {%- set schema = var('hexdbt_outbox_schema', target.schema ~ '_hexdbt') -%}
  {%- set identifier = var('hexdbt_outbox_table', 'hexdbt_outbox') -%}
  {{- return(api.Relation.create(database=target.database, schema=schema, identifier=identifier)) -}}
{%- endmacro %}


{#- The entry as a plain dict: what `hexdbt plan` reads from run_results.json and manifest.json. -#}
{% macro hexdbt_outbox_entry(results) -%}
  {%- set config_keys = var('hexdbt_config_keys', ['materialized']) -%}
  {%- set time_format = '%Y-%m-%dT%H:%M:%S.%fZ' -%}
  {%- set ran = [] -%}
  {%- for result in results -%}
    {%- set execute_timing = [] -%}
    {%- for phase in result.timing if phase.name == 'execute' -%}
      {%- do execute_timing.append(phase) -%}
    {%- endfor -%}
    {%- set phase = execute_timing[0] if execute_timing else none -%}
    {%- set rows = result.adapter_response.get('rows_affected') if result.adapter_response else none -%}
    {%- do ran.append({
        'unique_id': result.node.unique_id,
        'status': result.status | string,
        'started_at': phase.started_at.strftime(time_format) if phase and phase.started_at else none,
        'completed_at': phase.completed_at.strftime(time_format) if phase and phase.completed_at else none,
        'execution_time': result.execution_time,
        'rows_affected': rows if rows is number else none,
        'message': result.message if result.message is string else none,
    }) -%}
  {%- endfor -%}

  {%- set nodes = {} -%}
  {%- set tests = [] -%}
  {%- for node in graph.nodes.values() -%}
    {%- if node.resource_type in ('model', 'seed', 'snapshot') -%}
      {%- set config = {} -%}
      {%- for key in config_keys if node.config.get(key) is not none -%}
        {%- do config.update({key: node.config.get(key)}) -%}
      {%- endfor -%}
      {%- do nodes.update({node.unique_id: {
          'name': node.name,
          'resource_type': node.resource_type,
          'package_name': node.package_name,
          'path': node.path,
          'original_file_path': node.original_file_path,
          'fqn': node.fqn,
          'tags': node.tags,
          'meta': node.meta or node.config.get('meta') or {},
          'config': config,
          'tests': [],
      }}) -%}
    {%- elif node.resource_type == 'test' and node.get('attached_node') -%}
      {%- do tests.append((node.attached_node, node.unique_id)) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- for attached_node, test_id in tests if attached_node in nodes -%}
    {%- do nodes[attached_node]['tests'].append(test_id) -%}
  {%- endfor -%}

  {%- set exposures = {} -%}
  {%- for exposure in graph.exposures.values() -%}
    {%- set meta = exposure.meta or exposure.get('config', {}).get('meta') or {} -%}
    {%- if meta.get('hex') is not none or 'hex.tech' in (exposure.url or '') -%}
      {%- do exposures.update({exposure.unique_id: {
          'name': exposure.name,
          'label': exposure.label,
          'type': exposure.type,
          'url': exposure.url,
          'package_name': exposure.package_name,
          'original_file_path': exposure.original_file_path,
          'meta': meta,
          'depends_on': exposure.depends_on.nodes,
      }}) -%}
    {%- endif -%}
  {%- endfor -%}

  {{- return({
      'format': 1,
      'invocation_id': invocation_id,
      'command': flags.WHICH,
      'started_at': run_started_at.strftime(time_format),
      'generated_at': modules.datetime.datetime.now(modules.pytz.utc).strftime(time_format),
      'dbt_version': dbt_version,
      'target': target.name,
      'project_name': project_name,
      'vars': invocation_args_dict.get('vars') or {},
      'results': ran,
      'nodes': nodes,
      'exposures': exposures,
  }) -}}
{%- endmacro %}


{#- Creating the schema and the table: dbt's own macros, which every adapter implements. -#}
{% macro default__hexdbt_create_outbox(relation) -%}
  {%- if adapter.get_relation(relation.database, relation.schema, relation.identifier) is none -%}
    {%- do adapter.create_schema(relation) -%}
    {%- do hexdbt_execute(hexdbt_create_outbox_sql(relation)) -%}
  {%- endif -%}
{%- endmacro %}


{% macro hexdbt_create_outbox_sql(relation) -%}
  create table if not exists {{ relation }} (
    invocation_id {{ dbt.type_string() }},
    chunk_index {{ dbt.type_int() }},
    chunk_count {{ dbt.type_int() }},
    written_at {{ dbt.type_string() }},
    payload {{ adapter.dispatch('hexdbt_long_text_type')() }}
  )
{%- endmacro %}


{#- A column for a chunk of up to hexdbt_outbox_chunk_chars characters. -#}
{% macro default__hexdbt_long_text_type() %}{{ dbt.type_string() }}{% endmacro %}
{% macro postgres__hexdbt_long_text_type() %}text{% endmacro %}
{% macro redshift__hexdbt_long_text_type() %}varchar(max){% endmacro %}
{% macro snowflake__hexdbt_long_text_type() %}varchar{% endmacro %}
{% macro duckdb__hexdbt_long_text_type() %}varchar{% endmacro %}


{% macro default__hexdbt_insert_chunk(relation, invocation_id, chunk_index, chunk_count, written_at, payload) -%}
  insert into {{ relation }} (invocation_id, chunk_index, chunk_count, written_at, payload)
  values (
    {{ hexdbt_string_literal(invocation_id) }},
    {{ chunk_index }},
    {{ chunk_count }},
    {{ hexdbt_string_literal(written_at) }},
    {{ hexdbt_string_literal(payload) }}
  )
{%- endmacro %}


{% macro hexdbt_string_literal(text) -%}
  {{- adapter.dispatch('hexdbt_string_literal')(text) -}}
{%- endmacro %}

{#- Standard SQL: a quote is doubled, a backslash is itself. -#}
{% macro default__hexdbt_string_literal(text) -%}
  '{{ text | replace("'", "''") }}'
{%- endmacro %}

{#- These read a backslash in a string literal as an escape. -#}
{% macro bigquery__hexdbt_string_literal(text) -%}
  '{{ text | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
{% macro snowflake__hexdbt_string_literal(text) -%}
  '{{ text | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
{% macro spark__hexdbt_string_literal(text) -%}
  '{{ text | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
{% macro databricks__hexdbt_string_literal(text) -%}
  '{{ text | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}
