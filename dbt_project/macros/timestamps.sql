{#- All timestamps are naive UTC (DuckDB TIMESTAMP, Snowflake TIMESTAMP_NTZ), so no session time zone
    can shift them. -#}

{% macro timestamp_type() -%}
  {{ return(adapter.dispatch('timestamp_type', 'stock_platform')()) }}
{%- endmacro %}

{% macro default__timestamp_type() -%} timestamp_ntz {%- endmacro %}

{% macro duckdb__timestamp_type() -%} timestamp {%- endmacro %}


{% macro epoch_seconds_to_timestamp(expr) -%}
  {{ return(adapter.dispatch('epoch_seconds_to_timestamp', 'stock_platform')(expr)) }}
{%- endmacro %}

{% macro default__epoch_seconds_to_timestamp(expr) -%}
  to_timestamp_ntz({{ expr }}, 0)
{%- endmacro %}

{% macro duckdb__epoch_seconds_to_timestamp(expr) -%}
  make_timestamp(({{ expr }}) * 1000000)
{%- endmacro %}


{% macro epoch_millis_to_timestamp(expr) -%}
  {{ return(adapter.dispatch('epoch_millis_to_timestamp', 'stock_platform')(expr)) }}
{%- endmacro %}

{% macro default__epoch_millis_to_timestamp(expr) -%}
  to_timestamp_ntz({{ expr }}, 3)
{%- endmacro %}

{% macro duckdb__epoch_millis_to_timestamp(expr) -%}
  make_timestamp(({{ expr }}) * 1000)
{%- endmacro %}


{#- A 'YYYY-MM-DD HH:MM:SS' UTC literal, as passed by Dagster in vars. -#}
{% macro timestamp_literal(value) -%}
  cast('{{ value }}' as {{ timestamp_type() }})
{%- endmacro %}
