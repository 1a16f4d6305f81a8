{{ config(materialized='ephemeral') }}

{#- The raw envelopes as typed columns (macro parsed_envelopes, the one definition of how an envelope is
    parsed), read by silver_quotes; silver_rejected_quotes applies the same macro to the few raw rows
    silver_quotes left out. One row per raw row.

    Ephemeral, not a view or a table: it is inlined into each silver model as a CTE, so an incremental run's
    window filter (on `minute`, or on `envelope_minute` on Snowflake) reaches the raw table's scan and only
    the window's rows are parsed; a table would store every quote a second time and add a write to every
    run, and a view would add a DDL statement and a Dagster asset to every run for nothing. -#}

with

raw as (

    select * from {{ source('bronze', 'bronze_stock_quotes_raw') }}

),

parsed as (

    {{ parsed_envelopes('raw') }}

)

select * from parsed
