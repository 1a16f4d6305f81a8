{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key=['symbol', 'quote_ts'],
    )
}}

{#- One row per symbol and Finnhub quote time: of all valid raw rows sharing that key, the first by
    quote_precedence() (earliest fetched, then record id, loaded minute, topic, Kafka partition, offset).
    Finnhub repeats an unchanged quote on every poll while the market is closed, and Kafka may deliver a
    record twice; both collapse here.

    An incremental run reads the raw minutes of its window, and for each key they hold, compares them with
    the row already here (the first of every row processed before). The first of a set is the first of
    the firsts of its parts, whatever the parts, so after any sequence of runs that covers every loaded
    minute the table equals a full refresh. -#}

with

parsed as (

    select * from {{ ref('stg_raw_quotes') }}
    {% if is_incremental() %}
    where {{ raw_window_filter() }}
    {% endif %}

),

valid as (

    select
        producer_run_id || ':' || cast(seq as varchar) as record_id,
        symbol,
        {{ epoch_seconds_to_timestamp('quote_epoch_s') }} as quote_ts,
        price,
        change,
        change_pct,
        day_high,
        day_low,
        day_open,
        prev_close,
        {{ epoch_millis_to_timestamp('fetched_at_ms') }} as fetched_at,
        source,
        producer_run_id,
        seq,
        minute,
        topic,
        cast(kafka_partition as integer) as kafka_partition,
        kafka_offset
    from parsed
    where {{ quote_rejection_reason() }} is null

),

{% if is_incremental() %}
already_loaded as (

    select existing.*
    from {{ this }} as existing
    where exists (
        select 1
        from valid
        where valid.symbol = existing.symbol and valid.quote_ts = existing.quote_ts
    )

),

candidates as (

    select * from valid
    union all
    select * from already_loaded

),
{% else %}
candidates as (

    select * from valid

),
{% endif %}

final as (

    select *
    from candidates
    qualify row_number() over (partition by symbol, quote_ts order by {{ quote_precedence() }}) = 1

)

select * from final
