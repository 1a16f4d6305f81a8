{#- The quote record contract of stock_platform/quotes.py (validate_record), restated for SQL. Silver accepts
    exactly the records validate_record accepts; stock_platform_tests/transform/test_silver_validation.py
    compares the two on generated records, bounds included. -#}
{% macro quote_contract() -%}
  {{ return({
      'field_count': 14,
      'schema_version': 1,
      'min_price': '0.0001',
      'max_price': '10000000.0',
      'max_change': '10000000.0',
      'max_change_pct': '10000000000000.0',
      'min_epoch_s': 946684800,
      'max_epoch_s': 4102444800,
      'clock_tolerance_ms': 300000,
      'sources': ['finnhub', 'simulated', 'replay'],
      'symbol_pattern': '[A-Z0-9][A-Z0-9.:-]{0,19}',
      'run_id_pattern': '[A-Za-z0-9._-]{1,64}',
  }) }}
{%- endmacro %}


{#- The raw envelopes of relation `raw` as typed columns: the body of the staging model stg_raw_quotes.

    Each record field becomes a typed column that is null unless the field holds the JSON type the
    contract requires: a JSON integer within 64 bits (schema_version, t, fetched_at, seq), a JSON number
    (c, d, dp, h, l, o, pc; a boolean is not one), a JSON string (symbol, source, producer_run_id). A value
    of any other type, or a missing or null field, becomes null, never an error, so a malformed record is
    rejected by silver instead of failing the run. `field_count` is the number of keys of `quote` (0 or
    null when `quote` is not a JSON object). `envelope_minute` is the envelope's `minute` text as the loader
    wrote it ('YYYY-MM-DDTHH:MM:SSZ'), which Snowflake's window filter compares (raw_window_filter). -#}
{% macro parsed_envelopes(raw) -%}
  {{ return(adapter.dispatch('parsed_envelopes', 'stock_platform')(raw)) }}
{%- endmacro %}

{#- Snowflake (and fakesnow): the envelope is a VARIANT; JSON types come from variant_type(). -#}
{% macro default__parsed_envelopes(raw) -%}
    select
        {{ raw_minute() }} as minute,
        v:minute::varchar as envelope_minute,
        {{ json_text('v', ['topic']) }} as topic,
        {{ json_bigint('v', ['kafka_partition']) }} as kafka_partition,
        {{ json_bigint('v', ['kafka_offset']) }} as kafka_offset,
        {{ json_text('v', ['object_key']) }} as object_key,
        case when {{ variant_type('v:quote') }} = 'OBJECT' then array_size(object_keys(v:quote)) end as field_count,
        {{ variant_integer('v:quote:schema_version') }} as schema_version,
        {{ variant_string('v:quote:symbol') }} as symbol,
        {{ variant_string('v:quote:producer_run_id') }} as producer_run_id,
        {{ variant_integer('v:quote:seq') }} as seq,
        {{ variant_string('v:quote:source') }} as source,
        {{ variant_integer('v:quote:t') }} as quote_epoch_s,
        {{ variant_integer('v:quote:fetched_at') }} as fetched_at_ms,
        {{ variant_number('v:quote:c') }} as price,
        {{ variant_number('v:quote:d') }} as change,
        {{ variant_number('v:quote:dp') }} as change_pct,
        {{ variant_number('v:quote:h') }} as day_high,
        {{ variant_number('v:quote:l') }} as day_low,
        {{ variant_number('v:quote:o') }} as day_open,
        {{ variant_number('v:quote:pc') }} as prev_close
    from {{ raw }}
{%- endmacro %}

{#- DuckDB: one json_transform of the envelope (its quote kept as JSON), then three reads of the quote: its
    keys (json_keys), its fields converted to their contract types (json_transform), and their JSON types
    (one json_type over all paths). A field's value is kept only when its JSON type is the contract's: the
    conversion alone is lenient (it reads "12" as 12 and true as 1), the type check makes it exact.
    Per-field json_type and cast calls parsed each field's text two or three times more: 5.9 -> 3.6 s for
    a 360-minute window of 2.16 M envelopes (docs/benchmarks.md, stop 32). Extracting each field from the
    envelope text separately parses the whole envelope once per field, slower still. No MATERIALIZED CTE:
    DuckDB (2.0) computes each transform once without it, and a materialized CTE would stop the silver
    models' window filter from reaching the raw table's scan (every raw row would be parsed on every run). -#}
{% macro duckdb__parsed_envelopes(raw) -%}
    {%- set envelope_type = {
        'topic': 'VARCHAR', 'kafka_partition': 'BIGINT', 'kafka_offset': 'BIGINT', 'object_key': 'VARCHAR',
        'quote': 'JSON'} -%}
    {#- (record field, column, kind): a JSON integer within 64 bits, a JSON number (a boolean is not one)
        or a JSON string; the JSON types json_type names for each kind, and the SQL type it becomes. -#}
    {%- set fields = [
        ('schema_version', 'schema_version', 'integer'), ('symbol', 'symbol', 'string'),
        ('producer_run_id', 'producer_run_id', 'string'), ('seq', 'seq', 'integer'),
        ('source', 'source', 'string'), ('t', 'quote_epoch_s', 'integer'),
        ('fetched_at', 'fetched_at_ms', 'integer'), ('c', 'price', 'number'), ('d', 'change', 'number'),
        ('dp', 'change_pct', 'number'), ('h', 'day_high', 'number'), ('l', 'day_low', 'number'),
        ('o', 'day_open', 'number'), ('pc', 'prev_close', 'number')] -%}
    {%- set json_types = {
        'integer': "('UBIGINT', 'BIGINT')", 'number': "('UBIGINT', 'BIGINT', 'DOUBLE')", 'string': "('VARCHAR')"} -%}
    {%- set sql_type = {'integer': 'BIGINT', 'number': 'DOUBLE', 'string': 'VARCHAR'} -%}
    {%- set quote_type = {} -%}
    {%- set paths = [] -%}
    {%- for field, column, kind in fields -%}
        {%- do quote_type.update({field: sql_type[kind]}) -%}
        {%- do paths.append("'$." ~ field ~ "'") -%}
    {%- endfor -%}
    select * from (
        with envelopes as (
            select
                {{ raw_minute() }} as minute,
                strftime({{ raw_minute() }}, '%Y-%m-%dT%H:%M:%SZ') as envelope_minute,
                json_transform(v, '{{ tojson(envelope_type) }}') as e
            from {{ raw }}
        ),
        quotes as (
            select
                minute,
                envelope_minute,
                e.topic as topic,
                e.kafka_partition as kafka_partition,
                e.kafka_offset as kafka_offset,
                e.object_key as object_key,
                -- 0 for any JSON value but an object (json_keys has nothing to list).
                len(json_keys(e.quote)) as field_count,
                json_transform(e.quote, '{{ tojson(quote_type) }}') as q,
                json_type(e.quote, [{{ paths | join(', ') }}]) as q_types
            from envelopes
        )
        select
            minute,
            envelope_minute,
            topic,
            kafka_partition,
            kafka_offset,
            object_key,
            field_count,
            {#- A JSON integer above 2^63 - 1 (json_type UBIGINT) converts to null as BIGINT: rejected. #}
            {%- for field, column, kind in fields %}
            case when q_types[{{ loop.index }}] in {{ json_types[kind] }} then q.{{ field }} end as {{ column }}
            {{- ',' if not loop.last }}
            {%- endfor %}
        from quotes
    ) as parsed_envelopes
{%- endmacro %}

{#- Snowflake VARIANT values. TYPEOF says INTEGER for a JSON number without fraction or exponent, DECIMAL
    or DOUBLE for the others (1.0 is DECIMAL), BOOLEAN, VARCHAR, NULL_VALUE, OBJECT, ARRAY. -#}
{#- Nested CASEs: a cast is only reached for the JSON type it can take (a VARIANT object cast to VARCHAR
    is an error on Snowflake, and AND does not promise to evaluate its left side first). -#}
{% macro variant_integer(expr) -%}
  case when {{ variant_type(expr) }} = 'INTEGER' then
      case when try_to_number({{ expr }}::varchar) between -9223372036854775808 and 9223372036854775807
          then cast(try_to_number({{ expr }}::varchar) as bigint) end
  end
{%- endmacro %}

{% macro variant_number(expr) -%}
  case when {{ variant_type(expr) }} in ('INTEGER', 'DECIMAL', 'DOUBLE') then {{ expr }}::double end
{%- endmacro %}

{% macro variant_string(expr) -%}
  case when {{ variant_type(expr) }} = 'VARCHAR' then {{ expr }}::varchar end
{%- endmacro %}


{#- `expr` matches `pattern` as a whole (no partial match, nothing after it, not even a line break). -#}
{% macro full_match(expr, pattern) -%}
  {{ return(adapter.dispatch('full_match', 'stock_platform')(expr, pattern)) }}
{%- endmacro %}

{#- Snowflake's REGEXP_LIKE anchors the pattern at both ends. -#}
{% macro default__full_match(expr, pattern) -%}
  regexp_like({{ expr }}, '{{ pattern }}')
{%- endmacro %}

{% macro duckdb__full_match(expr, pattern) -%}
  regexp_full_match({{ expr }}, '{{ pattern }}')
{%- endmacro %}


{#- Why a parsed row is not a valid quote record, or null when it is one: the rules of validate_record, the
    first failing rule wins. Only acceptance is the contract; the reasons are coarser than the producer's. -#}
{% macro quote_rejection_reason() -%}
  {%- set c = quote_contract() -%}
  {%- set min_price = "cast('" ~ c.min_price ~ "' as double)" -%}
  {%- set max_price = "cast('" ~ c.max_price ~ "' as double)" -%}
  {%- set max_change = "cast('" ~ c.max_change ~ "' as double)" -%}
  {%- set max_change_pct = "cast('" ~ c.max_change_pct ~ "' as double)" -%}
    case
        when field_count is null or field_count <> {{ c.field_count }}
            then 'not an object of exactly the record fields'
        when schema_version is null or symbol is null or producer_run_id is null or seq is null
            or source is null or quote_epoch_s is null or fetched_at_ms is null or price is null
            or change is null or change_pct is null or day_high is null or day_low is null
            or day_open is null or prev_close is null
            then 'missing field or wrong JSON type'
        when schema_version <> {{ c.schema_version }} then 'unsupported schema_version'
        when not {{ full_match('symbol', c.symbol_pattern) }} then 'symbol is not a ticker'
        when not (
            price between {{ min_price }} and {{ max_price }}
            and day_high between {{ min_price }} and {{ max_price }}
            and day_low between {{ min_price }} and {{ max_price }}
            and day_open between {{ min_price }} and {{ max_price }}
            and prev_close between {{ min_price }} and {{ max_price }}
        ) then 'price out of range'
        when day_high < day_low then 'high below low'
        when not (
            change between -{{ max_change }} and {{ max_change }}
            and change_pct between -{{ max_change_pct }} and {{ max_change_pct }}
        ) then 'change out of range'
        when quote_epoch_s < {{ c.min_epoch_s }} or quote_epoch_s >= {{ c.max_epoch_s }}
            then 'quote time out of range'
        when fetched_at_ms < {{ c.min_epoch_s * 1000 }} or fetched_at_ms >= {{ c.max_epoch_s * 1000 }}
            then 'fetched_at out of range'
        when seq < 0 then 'negative seq'
        {#- Only reached with t and fetched_at in range, so the product cannot overflow. #}
        when quote_epoch_s * 1000 > fetched_at_ms + {{ c.clock_tolerance_ms }}
            then 'quote time after fetched_at'
        when source not in ('{{ c.sources | join("', '") }}') then 'unknown source'
        when not {{ full_match('producer_run_id', c.run_id_pattern) }} then 'producer_run_id is not an id'
    end
{%- endmacro %}


{#- The one total order on rows that share a silver key (symbol, quote_ts), first = kept: the earliest
    fetched, then the smallest record id ('producer_run_id:seq', compared as text), then the earliest loaded
    minute, then topic, Kafka partition and offset. (minute, topic, kafka_partition, kafka_offset) is unique
    per raw row, so the order is total: the row kept does not depend on which rows arrived in which run. -#}
{% macro quote_precedence() -%}
  fetched_at, record_id, minute, topic, kafka_partition, kafka_offset
{%- endmacro %}
