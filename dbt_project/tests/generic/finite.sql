{#- Fails with the rows of `model` in which a double of `columns` is NaN, +inf or -inf, or null unless it
    is in `nullable`. One query per model, not one per column: the tests run after every minute's models.
    No dialect-specific function (DuckDB has isfinite, Snowflake does not): NaN sorts above every number on
    DuckDB and Snowflake alike, so `between` is false for NaN and both infinities. -#}
{% test finite(model, columns, nullable=[]) %}
    select *
    from {{ model }}
    where
    {%- for column in columns %}
        {% if not loop.first %}or {% endif -%}
        {% if column not in nullable %}{{ column }} is null or {% endif -%}
        not ({{ column }} between -1e300 and 1e300)
    {%- endfor %}
{% endtest %}
