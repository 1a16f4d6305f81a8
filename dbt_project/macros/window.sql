{#- The minute window an incremental run processes.

    Dagster passes the partition's window as vars `min_minute` / `max_minute` ('YYYY-MM-DD HH:MM:SS', UTC,
    end exclusive). The lower bound is moved back by `lookback_minutes`, so records that were loaded
    late into a recent minute (a minute re-materialized after its first run) are picked up by the next
    run. Re-reading them is harmless: every incremental model replaces rows by key.

    The same window may come as environment variables STOCK_PLATFORM_DBT_MIN_MINUTE / _MAX_MINUTE, which
    is how Dagster passes it: a change of `--vars` makes dbt re-parse the whole project (about 1.5 s here),
    a changed env var only the files that read it.

    Without either (a manual `dbt build`), `fallback_lower` (SQL for a timestamp, e.g. the newest minute
    already processed) is used, or no bound at all. -#}
{% macro minute_window_filter(minute_expr, fallback_lower=none) -%}
  {%- set min_minute = var('min_minute', none) or env_var('STOCK_PLATFORM_DBT_MIN_MINUTE', '') -%}
  {%- set max_minute = var('max_minute', none) or env_var('STOCK_PLATFORM_DBT_MAX_MINUTE', '') -%}
  {%- set lookback = var('lookback_minutes', 3) | int -%}
  {%- set conditions = [] -%}
  {%- if min_minute -%}
    {%- do conditions.append(minute_expr ~ ' >= ' ~ dbt.dateadd('minute', -lookback, timestamp_literal(min_minute))) -%}
  {%- elif fallback_lower -%}
    {%- do conditions.append(minute_expr ~ ' >= ' ~ dbt.dateadd('minute', -lookback, '(' ~ fallback_lower ~ ')')) -%}
  {%- endif -%}
  {%- if max_minute -%}
    {%- do conditions.append(minute_expr ~ ' < ' ~ timestamp_literal(max_minute)) -%}
  {%- endif -%}
  {{ conditions | join(' and ') if conditions else '1 = 1' }}
{%- endmacro %}


{#- The minute (partition) of a raw row: the UTC minute of its Kafka message timestamp. DuckDB's raw table
    has it as a column, which lets DuckDB skip row groups outside the window instead of parsing JSON. -#}
{% macro raw_minute() -%}
  {{ return(adapter.dispatch('raw_minute', 'stock_platform')()) }}
{%- endmacro %}

{% macro default__raw_minute() -%}
  date_trunc('minute', {{ epoch_millis_to_timestamp(json_bigint('v', ['kafka_timestamp_ms'])) }})
{%- endmacro %}

{% macro duckdb__raw_minute() -%}
  minute
{%- endmacro %}
