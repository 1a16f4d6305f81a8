{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        tmp_relation_type=incremental_tmp_relation_type(),
        unique_key=['minute'],
    )
}}

{#- Raw rows that silver_quotes keeps out, with the reason: the count of invalid records per minute.
    Ingestion already validates records, so any row here means a producer or loader let one through.

    A row depends on its raw row only, so an incremental run replaces the rejected rows of each minute of
    its window that has any (keyed by minute: a minute is read whole, every topic). -#}

with

parsed as (

    select * from {{ ref('stg_raw_quotes') }}
    {% if is_incremental() %}
    where {{ raw_window_filter() }}
    {% endif %}

),

final as (

    select
        minute,
        topic,
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
