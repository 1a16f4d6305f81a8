{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key='symbol',
    )
}}

{#- One row per symbol: its latest quote. An incremental run compares the window's quotes with the row
    already here, so a late record older than the current one never replaces it. -#}

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
    {% if is_incremental() %}
    where {{ minute_window_filter('minute') }}
    {% endif %}

),

{% if is_incremental() %}
candidates as (

    select * from quotes
    union all
    select existing.*
    from {{ this }} as existing
    where existing.symbol in (select symbol from quotes)

),
{% else %}
candidates as (

    select * from quotes

),
{% endif %}

final as (

    select *
    from candidates
    qualify row_number() over (partition by symbol order by as_of desc, fetched_at desc) = 1

)

select * from final
