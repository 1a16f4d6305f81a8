{#- Layers get their own schemas named exactly `silver` and `gold` (not dbt's `<target>_<custom>`), so a
    BI role can be granted the gold schema alone. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {%- if custom_schema_name is none -%}
    {{ target.schema }}
  {%- else -%}
    {{ custom_schema_name | trim }}
  {%- endif -%}
{%- endmacro %}
