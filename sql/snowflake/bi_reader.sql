-- stock_platform: a read-only role for Power BI and the live dashboard on the GOLD schema, and nothing else.
--
-- Run once by an administrator after setup.sql and dbt_transformer.sql (USERADMIN creates the role and
-- user, SYSADMIN the warehouse, SECURITYADMIN grants). Power BI (Desktop, and the
-- service's scheduled or DirectQuery connections) signs in as a user holding this role; it can SELECT
-- the gold tables and run queries on its own warehouse, and cannot see BRONZE or SILVER or change anything.
-- Set the user's password (step 3) before Power BI signs in.

-- 1. A warehouse of its own: report queries never queue behind loads, and their cost shows apart.
-- DirectQuery sends a query per visual on every page view or refresh; XSMALL with a short
-- AUTO_SUSPEND keeps an idle report from billing.
USE ROLE SYSADMIN;
CREATE WAREHOUSE IF NOT EXISTS STOCK_PLATFORM_BI_WH
  WAREHOUSE_SIZE = XSMALL
  AUTO_SUSPEND = 60
  AUTO_RESUME = TRUE
  INITIALLY_SUSPENDED = TRUE
  COMMENT = 'stock_platform Power BI (DirectQuery on GOLD)';

-- 2. The role ---------------------------------------------------------------------------------------
USE ROLE USERADMIN;
CREATE ROLE IF NOT EXISTS STOCK_PLATFORM_BI_READER
  COMMENT = 'stock_platform Power BI: read-only on STOCK_PLATFORM.GOLD';

USE ROLE SECURITYADMIN;
GRANT ROLE STOCK_PLATFORM_BI_READER TO ROLE SYSADMIN;

GRANT USAGE ON WAREHOUSE STOCK_PLATFORM_BI_WH TO ROLE STOCK_PLATFORM_BI_READER;
GRANT USAGE ON DATABASE STOCK_PLATFORM TO ROLE STOCK_PLATFORM_BI_READER;
GRANT USAGE ON SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_BI_READER;
GRANT SELECT ON ALL TABLES IN SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_BI_READER;
GRANT SELECT ON ALL VIEWS IN SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_BI_READER;
-- dbt re-creates gold_treechart on every run (CREATE OR REPLACE), which drops the grants on the old
-- table; future grants give the new one the same SELECT, and cover gold tables added later.
GRANT SELECT ON FUTURE TABLES IN SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_BI_READER;
GRANT SELECT ON FUTURE VIEWS IN SCHEMA STOCK_PLATFORM.GOLD TO ROLE STOCK_PLATFORM_BI_READER;

-- 3. The user Power BI signs in as ------------------------------------------------------------------
-- With Microsoft Entra ID SSO configured for the account, grant the role to the report authors' own
-- users instead and skip this user. Otherwise a dedicated user; set its credential as your Snowflake
-- account's authentication policy requires (Power BI's Snowflake connector signs in with a user name and
-- password, or with Entra ID, not with a key pair: so this user is not TYPE = SERVICE like the pipeline's).
USE ROLE USERADMIN;
CREATE USER IF NOT EXISTS STOCK_PLATFORM_POWERBI
  DEFAULT_ROLE = STOCK_PLATFORM_BI_READER
  DEFAULT_WAREHOUSE = STOCK_PLATFORM_BI_WH
  DEFAULT_NAMESPACE = STOCK_PLATFORM.GOLD
  COMMENT = 'stock_platform Power BI reports';
-- ALTER USER STOCK_PLATFORM_POWERBI SET PASSWORD = '<a long random password from your vault>';

USE ROLE SECURITYADMIN;
GRANT ROLE STOCK_PLATFORM_BI_READER TO USER STOCK_PLATFORM_POWERBI;

-- 4. The live dashboard's user (stock-platform dashboard, DASHBOARD_SNOWFLAKE_USER) ---------------------
-- A service: no password, key-pair authentication only, the same read-only role. Generate its key pair
-- as for the pipeline's users (docs/troubleshooting.md) and give the dashboard the private key's path in
-- DASHBOARD_SNOWFLAKE_PRIVATE_KEY_PATH.
USE ROLE USERADMIN;
CREATE USER IF NOT EXISTS STOCK_PLATFORM_DASHBOARD_SVC
  TYPE = SERVICE
  DEFAULT_ROLE = STOCK_PLATFORM_BI_READER
  DEFAULT_WAREHOUSE = STOCK_PLATFORM_BI_WH
  DEFAULT_NAMESPACE = STOCK_PLATFORM.GOLD
  COMMENT = 'stock_platform live dashboard (DASHBOARD_SNOWFLAKE_USER)';
-- ALTER USER STOCK_PLATFORM_DASHBOARD_SVC SET RSA_PUBLIC_KEY = '<contents of rsa_key.pub without header lines>';

USE ROLE SECURITYADMIN;
GRANT ROLE STOCK_PLATFORM_BI_READER TO USER STOCK_PLATFORM_DASHBOARD_SVC;

-- 5. Check: as the BI role, gold is readable and the rest is not.
-- USE ROLE STOCK_PLATFORM_BI_READER;
-- SELECT COUNT(*) FROM STOCK_PLATFORM.GOLD.GOLD_KPI;                  -- works
-- SELECT COUNT(*) FROM STOCK_PLATFORM.BRONZE.BRONZE_STOCK_QUOTES_RAW; -- fails: not authorized
