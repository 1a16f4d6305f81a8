"""A fresh database on the session's fakesnow server per test, laid out as sql/snowflake/setup.sql does."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import snowflake.connector

if TYPE_CHECKING:  # imported where used: dagster_snowflake takes seconds, which the fast tier would pay
    from dagster_snowflake import SnowflakeResource

    from stock_platform.resources.snowflake_warehouse import SnowflakeWarehouse


def create_bronze_database(server: Any, prefix: str, raw_table: bool = False) -> str:
    """A new database with its BRONZE schema (and, with ``raw_table``, the raw table and its stage)."""
    database = f"{prefix}_{uuid.uuid4().hex[:8].upper()}"
    with snowflake.connector.connect(**server.connection_kwargs()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"CREATE DATABASE {database}")
        cursor.execute(f"CREATE SCHEMA {database}.BRONZE")
        if raw_table:
            cursor.execute(f"CREATE TABLE {database}.BRONZE.BRONZE_STOCK_QUOTES_RAW (V VARIANT)")
            cursor.execute(
                f"CREATE STAGE {database}.BRONZE.STOCK_QUOTES_STAGE FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP)"
            )
    return database


def dbt_env(server: Any, database: str) -> dict[str, str]:
    """The environment of dbt's `fakesnow` target (dbt_project/profiles.yml) for ``database``."""
    return {
        "DBT_TARGET": "fakesnow",
        "FAKESNOW_HOST": server.host,
        "FAKESNOW_PORT": str(server.port),
        "FAKESNOW_DATABASE": database,
        "FAKESNOW_SCHEMA": "BRONZE",
    }


def bronze_resource(server: Any, database: str) -> SnowflakeResource:
    from dagster_snowflake import SnowflakeResource

    """dagster-snowflake's resource on ``database``.BRONZE, as the platform wires it for Snowflake."""
    kwargs = server.connection_kwargs()
    return SnowflakeResource(
        account=kwargs["account"],
        user=kwargs["user"],
        password=kwargs["password"],
        database=database,
        schema="BRONZE",
        additional_snowflake_connection_args={
            k: kwargs[k] for k in ("host", "port", "protocol", "session_parameters", "network_timeout")
        },
    )


def loader_warehouse(resource: SnowflakeResource) -> SnowflakeWarehouse:
    """The raw-table warehouse on a fakesnow database (imported here, on first use)."""
    from stock_platform.resources.snowflake_warehouse import SnowflakeWarehouse

    return SnowflakeWarehouse(snowflake=resource)
