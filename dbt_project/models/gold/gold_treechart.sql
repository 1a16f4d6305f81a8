{{ config(materialized='view') }}

{#- One row per symbol with at least one 1-minute candle in the volatility window: the last
    `volatility_window_minutes` minutes up to the minute of the newest quote of any symbol. Small (one row
    per symbol, from the window's quotes only), so it is a view: always as current as silver, computed when
    read, never rebuilt by a minute's run. Formulas: see gold_treechart.yml. -#}

{%- set window_minutes = var('volatility_window_minutes', 60) | int %}

with

quotes as (

    select
        symbol,
        quote_ts,
        price
    from {{ ref('silver_quotes') }}

),

anchor as (

    select
        {{ dbt.dateadd('minute', -(window_minutes - 1), "date_trunc('minute', max(quote_ts))") }}
            as window_start,
        date_trunc('minute', max(quote_ts)) as window_end
    from quotes

),

{# The close of each 1-minute candle, as gold_candlestick defines it: the price of the minute's latest
   quote time. Read from silver rather than from gold_candlestick so gold models depend on silver only. #}
in_window as (

    select
        quotes.symbol,
        date_trunc('minute', quotes.quote_ts) as bucket_start,
        max_by(quotes.price, quotes.quote_ts) as close,
        min(anchor.window_start) as window_start,
        min(anchor.window_end) as window_end
    from quotes
    cross join anchor
    where quotes.quote_ts >= anchor.window_start
    group by quotes.symbol, date_trunc('minute', quotes.quote_ts)

),

log_returns as (

    select
        *,
        ln(close / lag(close) over (partition by symbol order by bucket_start)) as log_return
    from in_window

),

per_symbol as (

    select
        symbol,
        cast(count(*) as bigint) as candle_count,
        cast(count(log_return) as bigint) as return_count,
        min(window_start) as window_start,
        min(window_end) as window_end,
        avg(close) as avg_price,
        max_by(close, bucket_start) as last_price,
        stddev_samp(log_return) as volatility
    from log_returns
    group by symbol

),

market as (

    select avg(volatility) as mean_volatility
    from per_symbol

),

final as (

    select
        per_symbol.symbol,
        per_symbol.window_start,
        per_symbol.window_end,
        per_symbol.candle_count,
        per_symbol.return_count,
        per_symbol.avg_price,
        per_symbol.last_price,
        per_symbol.volatility,
        per_symbol.volatility / nullif(market.mean_volatility, 0) as relative_volatility
    from per_symbol
    cross join market

)

select * from final
