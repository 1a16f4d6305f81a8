{#- Fails with each combination of `columns` that more than one row of `model` has: a model's grain. A
    group by on the columns themselves, not on a concatenated string, which costs several times more on
    a table of millions of rows. -#}
{% test unique_combination(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as row_count
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}
