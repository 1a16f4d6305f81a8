-- stock_platform: Snowflake objects for the raw (bronze) layer, the loader role and its service user.
--
-- Run once by an administrator, first of the three scripts (then dbt_transformer.sql, then bi_reader.sql).
-- Each statement runs under the least of the system roles that can run it: USERADMIN creates roles and
-- users, SYSADMIN creates objects, SECURITYADMIN grants. The pipeline connects as
-- STOCK_PLATFORM_LOADER_SVC with the role STOCK_PLATFORM_LOADER and nothing else. Replace the public key
-- before running.

-- 1. Role and user -------------------------------------------------------------------------------
USE ROLE USERADMIN;
CREATE ROLE IF NOT EXISTS STOCK_PLATFORM_LOADER
  COMMENT = 'stock_platform ingestion: PUT to the raw stage, COPY/DELETE on the raw table and its ledger';
-- One service user per role: a leaked loader key cannot rebuild or drop silver and gold.
CREATE USER IF NOT EXISTS STOCK_PLATFORM_LOADER_SVC
  TYPE = SERVICE                       -- no password login; key-pair authentication only
  DEFAULT_ROLE = STOCK_PLATFORM_LOADER
  DEFAULT_WAREHOUSE = STOCK_PLATFORM_WH
  DEFAULT_NAMESPACE = STOCK_PLATFORM.BRONZE
  COMMENT = 'stock_platform Dagster code location: raw table loads (SNOWFLAKE_USER)';
-- The public half of the key pair whose private half SNOWFLAKE_PRIVATE_KEY_PATH names:
-- ALTER USER STOCK_PLATFORM_LOADER_SVC SET RSA_PUBLIC_KEY = '<contents of rsa_key.pub without header lines>';

USE ROLE SECURITYADMIN;
GRANT ROLE STOCK_PLATFORM_LOADER TO USER STOCK_PLATFORM_LOADER_SVC;
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
-- A resource monitor caps a runaway bill. Only an account administrator can create one, so it is not
-- part of this script; ask yours for a monthly credit quota on STOCK_PLATFORM_WH.

-- 3. Database, schema, stage, tables --------------------------------------------------------------
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
-- the lake (`stock-platform rebuild` reloads what it lacks). Created here so that the loader, which
-- finds it in place, never needs CREATE TABLE.
CREATE TABLE IF NOT EXISTS STOCK_PLATFORM.BRONZE.BRONZE_RAW_LOADED_MINUTES (
  TOPIC STRING NOT NULL,
  MINUTE TIMESTAMP_NTZ NOT NULL,
  OBJECT_KEY STRING,
  ROW_COUNT NUMBER NOT NULL,
  LOADED_AT TIMESTAMP_NTZ NOT NULL
) COMMENT = 'stock_platform: one row per (topic, minute) loaded into BRONZE_STOCK_QUOTES_RAW';

-- 4. Grants: exactly what the load runs (stock_platform/resources/snowflake_warehouse.py) -----------
USE ROLE SECURITYADMIN;
GRANT USAGE ON WAREHOUSE STOCK_PLATFORM_WH TO ROLE STOCK_PLATFORM_LOADER;
GRANT USAGE ON DATABASE STOCK_PLATFORM TO ROLE STOCK_PLATFORM_LOADER;
GRANT USAGE ON SCHEMA STOCK_PLATFORM.BRONZE TO ROLE STOCK_PLATFORM_LOADER;
-- PUT needs WRITE on an internal stage, COPY INTO needs READ.
GRANT READ, WRITE ON STAGE STOCK_PLATFORM.BRONZE.STOCK_QUOTES_STAGE TO ROLE STOCK_PLATFORM_LOADER;
-- COPY INTO and the ledger rows need INSERT; the idempotent re-load deletes the minute first; SELECT
-- counts the rows loaded and reads the ledger.
GRANT SELECT, INSERT, DELETE ON TABLE STOCK_PLATFORM.BRONZE.BRONZE_STOCK_QUOTES_RAW
  TO ROLE STOCK_PLATFORM_LOADER;
GRANT SELECT, INSERT, DELETE ON TABLE STOCK_PLATFORM.BRONZE.BRONZE_RAW_LOADED_MINUTES
  TO ROLE STOCK_PLATFORM_LOADER;
-- The loader creates nothing. dbt (silver/gold) has its own role and user: dbt_transformer.sql.
