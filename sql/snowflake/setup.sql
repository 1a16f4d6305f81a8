-- stock_platform: Snowflake objects for the raw (bronze) layer, with a least-privilege loader role.
--
-- Run once by an administrator. Only this script uses elevated roles (SECURITYADMIN for roles and
-- grants, SYSADMIN for objects); the pipeline itself connects as STOCK_PLATFORM_LOADER and never as
-- ACCOUNTADMIN. Replace the user name and key before running.

-- 1. Role and user -------------------------------------------------------------------------------
USE ROLE SECURITYADMIN;
CREATE ROLE IF NOT EXISTS STOCK_PLATFORM_LOADER
  COMMENT = 'stock_platform ingestion: PUT to the raw stage, COPY/DELETE on the raw table';
CREATE USER IF NOT EXISTS STOCK_PLATFORM_SVC
  TYPE = SERVICE                       -- no password login; key-pair authentication only
  DEFAULT_ROLE = STOCK_PLATFORM_LOADER
  DEFAULT_WAREHOUSE = STOCK_PLATFORM_WH
  COMMENT = 'stock_platform Dagster code location';
-- ALTER USER STOCK_PLATFORM_SVC SET RSA_PUBLIC_KEY = '<contents of rsa_key.pub without header lines>';
GRANT ROLE STOCK_PLATFORM_LOADER TO USER STOCK_PLATFORM_SVC;
GRANT ROLE STOCK_PLATFORM_LOADER TO ROLE SYSADMIN;  -- admins can see what the pipeline owns

-- 2. Warehouse -------------------------------------------------------------------------------------
-- XSMALL is plenty for a minute of quotes (a COPY of one small gzip file).
-- AUTO_SUSPEND: Snowflake bills at least 60 s each time a warehouse resumes. With a load every minute
-- the warehouse never gets to suspend anyway, so a short AUTO_SUSPEND only adds resume churn; with a
-- cadence of every N minutes (see docs/ingestion.md), AUTO_SUSPEND = 60 lets it sleep in between.
USE ROLE SYSADMIN;
CREATE WAREHOUSE IF NOT EXISTS STOCK_PLATFORM_WH
  WAREHOUSE_SIZE = XSMALL
  AUTO_SUSPEND = 60
  AUTO_RESUME = TRUE
  INITIALLY_SUSPENDED = TRUE
  COMMENT = 'stock_platform loads and dbt';
-- A resource monitor caps a runaway bill (needs ACCOUNTADMIN, so done once by an account admin):
-- CREATE RESOURCE MONITOR STOCK_PLATFORM_MONITOR WITH CREDIT_QUOTA = 100 FREQUENCY = MONTHLY
--   START_TIMESTAMP = IMMEDIATELY TRIGGERS ON 90 PERCENT DO NOTIFY ON 100 PERCENT DO SUSPEND;
-- ALTER WAREHOUSE STOCK_PLATFORM_WH SET RESOURCE_MONITOR = STOCK_PLATFORM_MONITOR;

-- 3. Database, schema, stage, table ---------------------------------------------------------------
CREATE DATABASE IF NOT EXISTS STOCK_PLATFORM;
CREATE SCHEMA IF NOT EXISTS STOCK_PLATFORM.BRONZE;

-- Internal named stage: one folder per minute (<topic>/YYYY/MM/DD/HHMM/), files already gzip NDJSON.
CREATE STAGE IF NOT EXISTS STOCK_PLATFORM.BRONZE.STOCK_QUOTES_STAGE
  FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP)
  COMMENT = 'stock_platform raw objects, one folder per minute';

-- One row per envelope; V carries the minute, topic, Kafka partition/offset and the quote record.
CREATE TABLE IF NOT EXISTS STOCK_PLATFORM.BRONZE.BRONZE_STOCK_QUOTES_RAW (
  V VARIANT
) COMMENT = 'stock_platform raw quotes: one row per Kafka record, replaced per minute';

-- The ledger of loaded minutes, written in the same transaction as each load: what tells a minute loaded
-- with 0 rows from one never loaded, and what the check warehouse_has_every_lake_minute compares with
-- the lake (`stock-platform rebuild` reloads what it lacks).
CREATE TABLE IF NOT EXISTS STOCK_PLATFORM.BRONZE.BRONZE_RAW_LOADED_MINUTES (
  TOPIC STRING NOT NULL,
  MINUTE TIMESTAMP_NTZ NOT NULL,
  OBJECT_KEY STRING,
  ROW_COUNT NUMBER NOT NULL,
  LOADED_AT TIMESTAMP_NTZ NOT NULL
) COMMENT = 'stock_platform: one row per (topic, minute) loaded into BRONZE_STOCK_QUOTES_RAW';

-- 4. Grants: exactly what the load needs --------------------------------------------------------
GRANT USAGE ON WAREHOUSE STOCK_PLATFORM_WH TO ROLE STOCK_PLATFORM_LOADER;
GRANT USAGE ON DATABASE STOCK_PLATFORM TO ROLE STOCK_PLATFORM_LOADER;
GRANT USAGE ON SCHEMA STOCK_PLATFORM.BRONZE TO ROLE STOCK_PLATFORM_LOADER;
-- PUT needs READ and WRITE on an internal stage; COPY needs READ.
GRANT READ, WRITE ON STAGE STOCK_PLATFORM.BRONZE.STOCK_QUOTES_STAGE TO ROLE STOCK_PLATFORM_LOADER;
-- COPY INTO needs INSERT; the idempotent re-load deletes the minute first, and SELECT counts the rows.
GRANT SELECT, INSERT, DELETE ON TABLE STOCK_PLATFORM.BRONZE.BRONZE_STOCK_QUOTES_RAW
  TO ROLE STOCK_PLATFORM_LOADER;
GRANT SELECT, INSERT, DELETE ON TABLE STOCK_PLATFORM.BRONZE.BRONZE_RAW_LOADED_MINUTES
  TO ROLE STOCK_PLATFORM_LOADER;
-- dbt (silver/gold) gets its own role and grants in its setup script; the loader creates nothing.
