{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key=['symbol', 'quote_ts'],
    )
}}

{#- One row per symbol and Finnhub quote time. Finnhub repeats an unchanged quote on every poll while the
    market is closed, and Kafka may deliver a record twice; both collapse here. Of the rows sharing a key,
    the earliest fetched wins, whether it is already in this table or arrives in this run, so an
    incremental run gives the same rows as a full refresh. -#}

with

raw as (

    select * from {{ source('bronze', 'bronze_stock_quotes_raw') }}
    {% if is_incremental() %}
    where {{ minute_window_filter(raw_minute(), fallback_lower='select max(minute) from ' ~ this) }}
    {% endif %}

),

parsed as (

    {{ parsed_envelopes('raw') }}

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

one_per_record as (

    select *
    from candidates
    qualify row_number() over (
        partition by record_id order by minute, kafka_partition, kafka_offset
    ) = 1

),

final as (

    select *
    from one_per_record
    qualify row_number() over (
        partition by symbol, quote_ts order by fetched_at, record_id
    ) = 1

)

select * from final
