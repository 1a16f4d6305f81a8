{#- Fails with the model's rows whose `column_name` (a minute) is in the run's window. On
    silver_rejected_quotes, with severity warn, this shows each minute's invalid records in Dagster as a
    warning on the asset check, with their count. -#}
{% test no_rows_in_window(model, column_name) %}
    select *
    from {{ model }}
    where {{ minute_window_filter(column_name) }}
{% endtest %}
