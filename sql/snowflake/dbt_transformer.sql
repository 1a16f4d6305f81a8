-- stock_platform: the role and service user dbt runs as, building SILVER and GOLD from the raw table.
--
-- Run once by an administrator after setup.sql. dbt connects as its own service user
-- STOCK_PLATFORM_DBT_SVC (DBT_SNOWFLAKE_USER) with the role STOCK_PLATFORM_TRANSFORMER
-- (DBT_SNOWFLAKE_ROLE): it reads the raw table in BRONZE and owns SILVER and GOLD, nothing else.
-- Replace the public key before running.

-- 1. Role and user -------------------------------------------------------------------------------
USE ROLE USERADMIN;
CREATE ROLE IF NOT EXISTS STOCK_PLATFORM_TRANSFORMER
  COMMENT = 'stock_platform dbt: reads the raw table, owns SILVER and GOLD';
CREATE USER IF NOT EXISTS STOCK_PLATFORM_DBT_SVC
  TYPE = SERVICE                       -- no password login; key-pair authentication only
  DEFAULT_ROLE = STOCK_PLATFORM_TRANSFORMER
  DEFAULT_WAREHOUSE = STOCK_PLATFORM_WH
  DEFAULT_NAMESPACE = STOCK_PLATFORM.SILVER
  COMMENT = 'stock_platform dbt: silver and gold builds (DBT_SNOWFLAKE_USER)';
-- The public half of the key pair whose private half DBT_SNOWFLAKE_PRIVATE_KEY_PATH names:
-- ALTER USER STOCK_PLATFORM_DBT_SVC SET RSA_PUBLIC_KEY = '<contents of rsa_key.pub without header lines>';

USE ROLE SECURITYADMIN;
GRANT ROLE STOCK_PLATFORM_TRANSFORMER TO USER STOCK_PLATFORM_DBT_SVC;
GRANT ROLE STOCK_PLATFORM_TRANSFORMER TO ROLE SYSADMIN;  -- admins can see what dbt owns

-- 2. The schemas dbt writes to ----------------------------------------------------------------------
-- Created here, not by dbt: dbt lists the schemas its role can see (SHOW SCHEMAS) and creates only the
-- missing ones, so with both in place it needs no CREATE SCHEMA on the database.
USE ROLE SYSADMIN;
CREATE SCHEMA IF NOT EXISTS STOCK_PLATFORM.SILVER;
CREATE SCHEMA IF NOT EXISTS STOCK_PLATFORM.GOLD;

-- 3. Grants ------------------------------------------------------------------------------------------
USE ROLE SECURITYADMIN;
GRANT USAGE ON WAREHOUSE STOCK_PLATFORM_WH TO ROLE STOCK_PLATFORM_TRANSFORMER;
GRANT USAGE ON DATABASE STOCK_PLATFORM TO ROLE STOCK_PLATFORM_TRANSFORMER;
-- Read the dbt sources (dbt_project/models/__sources.yml) and nothing else in BRONZE.
GRANT USAGE ON SCHEMA STOCK_PLATFORM.BRONZE TO ROLE STOCK_PLATFORM_TRANSFORMER;
GRANT SELECT ON TABLE STOCK_PLATFORM.BRONZE.BRONZE_STOCK_QUOTES_RAW TO ROLE STOCK_PLATFORM_TRANSFORMER;
-- Owning the schemas lets dbt create, replace, delete from and drop its tables (including the transient
-- staging tables of incremental runs) without further grants; COPY CURRENT GRANTS keeps the BI reader's.
GRANT OWNERSHIP ON SCHEMA STOCK_PLATFORM.SILVER TO ROLE STOCK_PLATFORM_TRANSFORMER COPY CURRENT GRANTS;
GRANT OWNERSHIP ON SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_TRANSFORMER COPY CURRENT GRANTS;
