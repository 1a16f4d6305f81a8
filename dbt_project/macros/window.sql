{#- The minute window an incremental run processes: the raw minutes [min_minute, max_minute) it was given.

    Dagster passes the partition's window as vars `min_minute` / `max_minute` ('YYYY-MM-DD HH:MM:SS', UTC,
    end exclusive), or as environment variables STOCK_PLATFORM_DBT_MIN_MINUTE / _MAX_MINUTE, which is how
    the Dagster asset passes it: a change of `--vars` makes dbt re-parse the whole project (about 1.5 s
    here), a changed env var only the files that read it.

    There is no lookback: every minute loaded into the raw table (first load or reload) is followed by a run
    whose window holds that minute, so a run that reads exactly the raw minutes of its window misses
    nothing, and the result does not depend on how late a minute was loaded.

    Without a window (a manual `dbt build`), an incremental run reads the whole raw table: slower, and the
    same result as a full refresh. -#}
{% macro run_window() -%}
  {%- set given = {
      'min_minute': var('min_minute', none) or env_var('STOCK_PLATFORM_DBT_MIN_MINUTE', ''),
      'max_minute': var('max_minute', none) or env_var('STOCK_PLATFORM_DBT_MAX_MINUTE', ''),
  } -%}
  {%- set bounds = {} -%}
  {%- for name, value in given.items() if value -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}', value | string) -%}
      {{ exceptions.raise_compiler_error(name ~ " must be 'YYYY-MM-DD HH:MM:SS' (UTC), got " ~ value) }}
    {%- endif -%}
    {%- do bounds.update({name: value | string}) -%}
  {%- endfor -%}
  {{ return(bounds) }}
{%- endmacro %}


{#- SQL condition: the timestamp `minute_expr` (a minute, naive UTC) is in the run's window. -#}
{% macro minute_window_filter(minute_expr) -%}
  {%- set bounds = run_window() -%}
  {%- set conditions = [] -%}
  {%- if bounds.min_minute -%}
    {%- do conditions.append(minute_expr ~ ' >= ' ~ timestamp_literal(bounds.min_minute)) -%}
  {%- endif -%}
  {%- if bounds.max_minute -%}
    {%- do conditions.append(minute_expr ~ ' < ' ~ timestamp_literal(bounds.max_minute)) -%}
  {%- endif -%}
  {{ conditions | join(' and ') if conditions else '1 = 1' }}
{%- endmacro %}


{#- SQL condition on a stg_raw_quotes row, or with `raw` on a row of the raw table under that alias: its raw
    row was loaded into a minute of the run's window. The silver models apply it to the ephemeral staging
    CTE; both dialects push it down to the raw table's scan, so only the window's envelopes are parsed. -#}
{% macro raw_window_filter(raw=none) -%}
  {{ return(adapter.dispatch('raw_window_filter', 'stock_platform')(raw)) }}
{%- endmacro %}

{#- Snowflake: `envelope_minute`, the envelope's `minute` text (v:minute::varchar, 'YYYY-MM-DDTHH:MM:SSZ', which
    the loader writes and deletes by), whose text order is its time order. Comparing the text keeps the
    predicate on the VARIANT path itself, which Snowflake can prune micro-partitions on. -#}
{% macro default__raw_window_filter(raw) -%}
  {%- set minute_text = 'envelope_minute' if raw is none else raw ~ '.v:minute::varchar' -%}
  {%- set bounds = run_window() -%}
  {%- set conditions = [] -%}
  {%- if bounds.min_minute -%}
    {%- do conditions.append(minute_text ~ " >= '" ~ bounds.min_minute | replace(' ', 'T') ~ "Z'") -%}
  {%- endif -%}
  {%- if bounds.max_minute -%}
    {%- do conditions.append(minute_text ~ " < '" ~ bounds.max_minute | replace(' ', 'T') ~ "Z'") -%}
  {%- endif -%}
  {{ conditions | join(' and ') if conditions else '1 = 1' }}
{%- endmacro %}

{#- DuckDB: the raw table's `minute` column, which the loader deletes and inserts by, and which lets DuckDB
    skip row groups outside the window instead of parsing their JSON. -#}
{% macro duckdb__raw_window_filter(raw) -%}
  {{ minute_window_filter(raw_minute(raw)) }}
{%- endmacro %}


{#- SQL condition: the raw-table row `raw` is the row `kept` of silver_quotes (or any relation with the
    identity columns of raw_row_identity), compared on the raw row's identity (minute, topic,
    kafka_partition, kafka_offset), unique per raw row, which silver_quotes keeps. `null_safe`: a null
    identity column matches a null (a raw row whose envelope lacks one is still found by its identity). -#}
{% macro is_raw_row_of(raw, kept, null_safe=false) -%}
  {{ same_values(raw_row_identity(raw), kept, 'is not distinct from' if null_safe else '=') }}
{%- endmacro %}

{#- The identity of the raw-table row `raw`: {column: SQL expression}. DuckDB reads it from the raw table's
    columns (the loader writes the partition and offset from the envelope, the minute and topic it loads),
    so no envelope is parsed; Snowflake reads the VARIANT's paths, as silver_quotes does. A row whose
    columns disagree with its envelope is only parsed, never lost. -#}
{% macro raw_row_identity(raw) -%}
  {{ return(adapter.dispatch('raw_row_identity', 'stock_platform')(raw)) }}
{%- endmacro %}

{% macro default__raw_row_identity(raw) -%}
  {{ return({
      'minute': raw_minute(raw),
      'topic': json_text(raw ~ '.v', ['topic']),
      'kafka_partition': json_bigint(raw ~ '.v', ['kafka_partition']),
      'kafka_offset': json_bigint(raw ~ '.v', ['kafka_offset']),
  }) }}
{%- endmacro %}

{% macro duckdb__raw_row_identity(raw) -%}
  {{ return({
      'minute': raw_minute(raw),
      'topic': raw ~ '.topic',
      'kafka_partition': raw ~ '.kafka_partition',
      'kafka_offset': raw ~ '.kafka_offset',
  }) }}
{%- endmacro %}

{#- The select list of raw_row_identity: `expression as column, ...`. -#}
{% macro raw_row_identity_columns(raw) -%}
  {%- set columns = [] -%}
  {%- for column, expression in raw_row_identity(raw).items() -%}
    {%- do columns.append(expression ~ ' as ' ~ column) -%}
  {%- endfor -%}
  {{ columns | join(', ') }}
{%- endmacro %}

{#- One line: each column of `kept` equals its expression (compared by `operator`). -#}
{% macro same_values(expressions, kept, operator='=') -%}
  {%- set conditions = [] -%}
  {%- for column, expression in expressions.items() -%}
    {%- do conditions.append(kept ~ '.' ~ column ~ ' ' ~ operator ~ ' ' ~ expression) -%}
  {%- endfor -%}
  {{ conditions | join(' and ') }}
{%- endmacro %}


{#- The minute (partition) a raw row was loaded into, naive UTC: the one definition on every dialect. -#}
{% macro raw_minute(raw=none) -%}
  {{ return(adapter.dispatch('raw_minute', 'stock_platform')(raw)) }}
{%- endmacro %}

{#- An explicit format rather than the session's TIMESTAMP_INPUT_FORMAT; 'T' and 'Z' are removed first
    because fakesnow does not translate quoted literals in a format. -#}
{% macro default__raw_minute(raw) -%}
  try_to_timestamp_ntz(replace(replace({{ raw ~ '.' if raw }}v:minute::varchar, 'T', ' '), 'Z', ''), 'YYYY-MM-DD HH24:MI:SS')
{%- endmacro %}

{% macro duckdb__raw_minute(raw) -%}
  {{ raw ~ '.' if raw }}minute
{%- endmacro %}
