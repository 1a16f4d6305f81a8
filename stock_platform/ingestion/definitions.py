"""Ingestion's Definitions: the assets, their checks, a per-minute job, and resources wired from env.

The environment is read here only, where resources are wired: ``OBJECT_STORE`` and ``WAREHOUSE`` pick
the implementation, paths default under ``STOCK_PLATFORM_HOME``, and every secret is a ``dg.EnvVar``
so its value is resolved at run time and never lands in the definitions or the logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
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

if TYPE_CHECKING:
    from dagster_snowflake import SnowflakeResource

ingest_minute_job = dg.define_asset_job(
    "ingest_minute_job",
    selection=dg.AssetSelection.assets(kafka_quote_batch, raw_quote_object, raw_quote_table),
    partitions_def=minute_partitions,
    description="Kafka batch → raw object → raw table for the selected minute(s).",
)


def _value(env: Mapping[str, str], name: str, default: str) -> str | dg.EnvVar:
    """An EnvVar when the variable is set (resolved at run time), else the default."""
    return dg.EnvVar(name) if env.get(name) else default


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("STOCK_PLATFORM_HOME") or Path.cwd() / ".stock_platform").resolve()


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def kafka_resource(env: Mapping[str, str]) -> KafkaResource:
    return KafkaResource(
        bootstrap_servers=_value(env, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic=_value(env, "KAFKA_TOPIC", "stock-quotes"),
        ingest_group=_value(env, "KAFKA_INGEST_GROUP", "stock-platform-ingest"),
        grace_seconds=float(env.get("KAFKA_GRACE_SECONDS") or 10.0),
        # Off only to replay history stamped at chosen times (the catch-up benchmark); see docs/ingestion.md.
        require_log_append_time=(env.get("KAFKA_REQUIRE_LOG_APPEND_TIME") or "true").strip().lower()
        not in {"0", "false", "no", "off"},
    )


def object_store_resource(env: Mapping[str, str]) -> ObjectStore:
    kind = (env.get("OBJECT_STORE") or "local").lower()
    if kind == "local":
        return LocalObjectStore(root=_value(env, "LAKE_DIR", str(_home(env) / "lake")))
    if kind == "s3":
        return S3ObjectStore(
            endpoint=dg.EnvVar("S3_ENDPOINT"),
            access_key=dg.EnvVar("S3_ACCESS_KEY"),
            secret_key=dg.EnvVar("S3_SECRET_KEY"),
            bucket=_value(env, "S3_BUCKET", "stock-quotes-raw"),
            secure=_flag(env, "S3_SECURE"),
        )
    raise ValueError(f"OBJECT_STORE must be 'local' or 's3', got {kind!r}")


def snowflake_resource(env: Mapping[str, str]) -> SnowflakeResource:
    from dagster_snowflake import SnowflakeResource

    auth: dict[str, Any] = {}
    if env.get("SNOWFLAKE_PRIVATE_KEY_PATH"):
        auth["private_key_path"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PATH")
        if env.get("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"):
            auth["private_key_password"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")
    else:
        auth["password"] = dg.EnvVar("SNOWFLAKE_PASSWORD")
    return SnowflakeResource(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar("SNOWFLAKE_USER"),
        role=_value(env, "SNOWFLAKE_ROLE", "STOCK_PLATFORM_LOADER"),
        warehouse=_value(env, "SNOWFLAKE_WAREHOUSE", "STOCK_PLATFORM_WH"),
        database=_value(env, "SNOWFLAKE_DATABASE", "STOCK_PLATFORM"),
        schema=_value(env, "SNOWFLAKE_SCHEMA", "BRONZE"),  # the field is schema_, its alias schema
        **auth,
    )


def warehouse_resource(env: Mapping[str, str]) -> Warehouse:
    kind = (env.get("WAREHOUSE") or "duckdb").lower()
    if kind == "duckdb":
        return DuckDBWarehouse(path=_value(env, "DUCKDB_PATH", str(_home(env) / "warehouse.duckdb")))
    if kind == "snowflake":
        # Imported here: the Snowflake client libraries take seconds to import, which every run of a
        # DuckDB platform would otherwise pay at start-up.
        from stock_platform.resources.snowflake_warehouse import SnowflakeWarehouse

        return SnowflakeWarehouse(snowflake=snowflake_resource(env))
    raise ValueError(f"WAREHOUSE must be 'duckdb' or 'snowflake', got {kind!r}")


def ingestion_resources(env: Mapping[str, str]) -> dict[str, dg.ConfigurableResource]:
    return {
        "kafka": kafka_resource(env),
        "object_store": object_store_resource(env),
        "warehouse": warehouse_resource(env),
    }


defs = dg.Definitions(
    assets=[stock_quotes_topic, kafka_quote_batch, raw_quote_object, raw_quote_table],
    jobs=[ingest_minute_job],
    resources=ingestion_resources(os.environ),
)
