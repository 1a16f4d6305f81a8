{#- The one place the fakesnow test target differs from Snowflake.

    dbt-snowflake's delete+insert stages the new rows in a session-scoped TEMPORARY table named with the
    model's database and schema; fakesnow (DuckDB underneath) refuses a temporary table outside DuckDB's
    `temp` catalog. A TRANSIENT staging table, which dbt-snowflake also supports and drops after the run,
    works on both, but production keeps dbt's default (temporary, never visible to other sessions). -#}
{% macro incremental_tmp_relation_type() -%}
  {{ return('transient' if target.name == 'fakesnow' else none) }}
{%- endmacro %}
