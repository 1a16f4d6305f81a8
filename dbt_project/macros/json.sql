{#- Reading fields of the raw envelope. DuckDB stores it as JSON text, Snowflake as VARIANT.
    `keys` is the path as a list, e.g. ['quote', 'c']. Values of the wrong JSON type become null
    (never an error), so a malformed record is rejected by silver instead of failing the run. -#}

{% macro json_text(column, keys) -%}
  {{ return(adapter.dispatch('json_text', 'stock_platform')(column, keys)) }}
{%- endmacro %}

{% macro default__json_text(column, keys) -%}
  {{ column }}:{{ keys | join(':') }}::varchar
{%- endmacro %}

{% macro duckdb__json_text(column, keys) -%}
  json_extract_string({{ column }}, '$.{{ keys | join('.') }}')
{%- endmacro %}


{% macro json_double(column, keys) -%}
  {{ return(adapter.dispatch('json_double', 'stock_platform')(column, keys)) }}
{%- endmacro %}

{% macro default__json_double(column, keys) -%}
  try_to_double({{ column }}:{{ keys | join(':') }}::varchar)
{%- endmacro %}

{% macro duckdb__json_double(column, keys) -%}
  try_cast(json_extract_string({{ column }}, '$.{{ keys | join('.') }}') as double)
{%- endmacro %}


{% macro json_bigint(column, keys) -%}
  {{ return(adapter.dispatch('json_bigint', 'stock_platform')(column, keys)) }}
{%- endmacro %}

{% macro default__json_bigint(column, keys) -%}
  cast(try_to_number({{ column }}:{{ keys | join(':') }}::varchar) as bigint)
{%- endmacro %}

{% macro duckdb__json_bigint(column, keys) -%}
  try_cast(json_extract_string({{ column }}, '$.{{ keys | join('.') }}') as bigint)
{%- endmacro %}
