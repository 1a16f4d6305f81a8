{#- The places the fakesnow test target differs from Snowflake.

    dbt-snowflake's delete+insert stages the new rows in a session-scoped TEMPORARY table named with the
    model's database and schema; fakesnow (DuckDB underneath) refuses a temporary table outside DuckDB's
    `temp` catalog. A TRANSIENT staging table, which dbt-snowflake also supports and drops after the run,
    works on both, but production keeps dbt's default (temporary, never visible to other sessions). -#}
{% macro incremental_tmp_relation_type() -%}
  {{ return('transient' if target.name == 'fakesnow' else none) }}
{%- endmacro %}


{#- The JSON type of a VARIANT value, as Snowflake's TYPEOF names it: INTEGER, DECIMAL, DOUBLE, BOOLEAN,
    VARCHAR, NULL_VALUE, OBJECT, ARRAY (null for a missing path). fakesnow's TYPEOF answers 'JSON' for
    everything (DuckDB's typeof); DuckDB's json_type, which fakesnow passes through, has the same
    distinctions under other names (a number with a fraction or an exponent is DOUBLE there). -#}
{% macro variant_type(expr) -%}
  {%- if target.name == 'fakesnow' -%}
    case json_type({{ expr }}) when 'UBIGINT' then 'INTEGER' when 'BIGINT' then 'INTEGER'
        when 'NULL' then 'NULL_VALUE' else json_type({{ expr }}) end
  {%- else -%}
    typeof({{ expr }})
  {%- endif -%}
{%- endmacro %}
