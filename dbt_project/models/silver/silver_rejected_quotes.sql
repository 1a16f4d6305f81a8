{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key=['minute', 'kafka_partition', 'kafka_offset'],
    )
}}

{#- Raw rows that silver_quotes keeps out, with the reason: the count of invalid records per minute.
    Ingestion already validates records, so any row here means a producer or loader let one through. -#}

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

final as (

    select
        minute,
        cast(kafka_partition as integer) as kafka_partition,
        kafka_offset,
        object_key,
        symbol,
        producer_run_id || ':' || cast(seq as varchar) as record_id,
        {{ quote_rejection_reason() }} as rejection_reason
    from parsed
    where {{ quote_rejection_reason() }} is not null

)

select * from final
