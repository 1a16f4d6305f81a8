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
    its window that has any (keyed by minute: a minute is read whole, every topic).

    Only a raw row that silver_quotes did not keep can be invalid (it keeps valid rows only), and telling a
    kept row from the others needs no JSON (is_raw_row_of): so only the window's rows silver_quotes left
    out, usually none, are parsed here, rather than every envelope a second time. The result is the same:
    the rows with a rejection reason.

    The anti-join finds the left-out rows' identities only, and a second look fetches their envelopes:
    carrying every envelope of the window through the anti-join made DuckDB spill them under dbt's memory
    cap (a 240-minute catch-up window: ~2.2 s, against ~0.25 s this way). -#}

with

left_out_rows as (

    select {{ raw_row_identity_columns('loaded') }}
    from {{ source('bronze', 'bronze_stock_quotes_raw') }} as loaded
    where
        not exists (
            select 1
            from {{ ref('silver_quotes') }} as kept
            where
                {{ is_raw_row_of('loaded', 'kept') }}
            {% if is_incremental() %}
                {#- The window's silver rows only (a kept row's minute is its raw row's): a smaller hash
                    table, and row groups outside the window skipped. #}
                and {{ minute_window_filter('kept.minute') }}
            {% endif %}
        )
    {% if is_incremental() %}
        and {{ raw_window_filter('loaded') }}
    {% endif %}

),

left_out as (

    select loaded.*
    from {{ source('bronze', 'bronze_stock_quotes_raw') }} as loaded
    where
        exists (
            select 1
            from left_out_rows
            where {{ is_raw_row_of('loaded', 'left_out_rows', null_safe=true) }}
        )
    {% if is_incremental() %}
        and {{ raw_window_filter('loaded') }}
    {% endif %}

),

parsed as (

    {{ parsed_envelopes('left_out') }}

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
