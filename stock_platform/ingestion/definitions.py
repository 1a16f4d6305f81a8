"""Ingestion's Definitions: the assets, their checks, a per-minute job, and resources wired from settings.

The settings are read once here (stock_platform/settings.py): ``OBJECT_STORE`` and ``WAREHOUSE`` pick the
implementation, paths default under ``STOCK_PLATFORM_HOME``, and every secret is a ``dg.EnvVar`` so its
value is resolved at run time and never lands in the definitions or the logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from stock_platform.ingestion.assets import (
    kafka_quote_batch,
    raw_quote_object,
    raw_quote_table,
    stock_quotes_topic,
)
from stock_platform.partitions import minute_partitions
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import LocalObjectStore, ObjectStore, S3ObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse, Warehouse
from stock_platform.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from dagster_snowflake import SnowflakeResource

ingest_minute_job = dg.define_asset_job(
    "ingest_minute_job",
    selection=dg.AssetSelection.assets(kafka_quote_batch, raw_quote_object, raw_quote_table),
    partitions_def=minute_partitions,
    description="Kafka batch → raw object → raw table for the selected minute(s).",
)


def kafka_resource(settings: Settings) -> KafkaResource:
    return KafkaResource(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        ingest_group=settings.kafka_ingest_group,
        grace_seconds=settings.kafka_grace_seconds,
        # Off only to replay history stamped at chosen times (the catch-up benchmark); see docs/ingestion.md.
        require_log_append_time=settings.kafka_require_log_append_time,
    )


def object_store_resource(settings: Settings) -> ObjectStore:
    if settings.object_store == "local":
        return LocalObjectStore(root=str(settings.lake_root))
    settings.require("s3_secret_key", because="when OBJECT_STORE=s3")
    return S3ObjectStore(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=dg.EnvVar("S3_SECRET_KEY"),
        bucket=settings.s3_bucket,
        secure=settings.s3_secure,
    )


def snowflake_auth(settings: Settings) -> dict[str, Any]:
    """Key-pair when a key is given (the loader is a TYPE = SERVICE user); a password only when set."""
    if settings.snowflake_private_key_path:
        auth: dict[str, Any] = {"private_key_path": settings.snowflake_private_key_path}
        if settings.snowflake_private_key_passphrase:
            auth["private_key_password"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")
        return auth
    if settings.snowflake_password:
        return {"password": dg.EnvVar("SNOWFLAKE_PASSWORD")}
    raise SettingsError(
        "WAREHOUSE=snowflake needs SNOWFLAKE_PRIVATE_KEY_PATH (key-pair auth of the loader's service user) "
        "or SNOWFLAKE_PASSWORD (a user that may log in with a password); neither is set"
    )


def snowflake_resource(settings: Settings) -> SnowflakeResource:
    settings.require("snowflake_account", "snowflake_user", because="when WAREHOUSE=snowflake")
    auth = snowflake_auth(settings)
    # Imported once the settings are known good: the Snowflake libraries take seconds to import.
    from dagster_snowflake import SnowflakeResource

    return SnowflakeResource(
        account=settings.snowflake_account,
        user=settings.snowflake_user,
        role=settings.snowflake_role,
        warehouse=settings.snowflake_warehouse,
        database=settings.snowflake_database,
        schema=settings.snowflake_schema,  # the field is schema_, its alias schema
        **auth,
    )


def warehouse_resource(settings: Settings) -> Warehouse:
    if settings.warehouse == "duckdb":
        return DuckDBWarehouse(path=str(settings.duckdb_file))
    snowflake = snowflake_resource(settings)
    # Imported here: the Snowflake client libraries take seconds to import, which every run of a DuckDB
    # platform would otherwise pay at start-up.
    from stock_platform.resources.snowflake_warehouse import SnowflakeWarehouse

    return SnowflakeWarehouse(snowflake=snowflake)


def ingestion_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "kafka": kafka_resource(settings),
        "object_store": object_store_resource(settings),
        "warehouse": warehouse_resource(settings),
    }


defs = dg.Definitions(
    assets=[stock_quotes_topic, kafka_quote_batch, raw_quote_object, raw_quote_table],
    jobs=[ingest_minute_job],
    resources=ingestion_resources(load_settings()),
)
