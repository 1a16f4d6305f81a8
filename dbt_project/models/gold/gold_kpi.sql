{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key='symbol',
    )
}}

{#- One row per symbol: its silver row with the latest quote time (silver has one row per symbol and quote
    time, so there is no tie).

    An incremental run recomputes, from silver, the row of every symbol that silver rows of the run's
    window touch (a row silver replaced in this run, by an earlier fetch of the same quote, has its new
    loaded minute in the window). Silver only ever adds keys or replaces a key's row, so a symbol's latest
    quote time never goes below the one already here: only that symbol's silver rows from that quote time
    on are read, which keeps a run from sorting all of silver; the smallest of those quote times (or none,
    for a symbol not here yet) also bounds silver's scan as a scalar, which lets DuckDB skip the row groups
    (and Snowflake the micro-partitions) of older quotes instead of reading all of silver every run. -#}

with

quotes as (

    select
        symbol,
        price,
        change,
        change_pct,
        day_high,
        day_low,
        day_open,
        prev_close,
        quote_ts as as_of,
        fetched_at
    from {{ ref('silver_quotes') }}

),

{% if is_incremental() %}
touched as (

    select distinct symbol
    from {{ ref('silver_quotes') }}
    where {{ minute_window_filter('minute') }}

),

lower_bound as (

    {#- Every valid quote time is after 2000-01-01 (quote_contract), so 1970 stands for "no bound". #}
    select min(coalesce(current_row.as_of, {{ timestamp_literal('1970-01-01 00:00:00') }})) as as_of
    from touched
    left join {{ this }} as current_row
        on touched.symbol = current_row.symbol

),

candidates as (

    select quotes.*
    from quotes
    inner join touched
        on quotes.symbol = touched.symbol
    left join {{ this }} as current_row
        on quotes.symbol = current_row.symbol
    where
        (current_row.as_of is null or quotes.as_of >= current_row.as_of)
        and quotes.as_of >= (select as_of from lower_bound)

),
{% else %}
candidates as (

    select * from quotes

),
{% endif %}

final as (

    select *
    from candidates
    qualify row_number() over (partition by symbol order by as_of desc) = 1

)

select * from final
