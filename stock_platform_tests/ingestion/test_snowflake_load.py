"""The Snowflake load (PUT to the minute's stage folder, delete + COPY in one transaction) on fakesnow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from stock_platform.object_keys import minute_iso
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform_tests.fakesnow_databases import bronze_resource, create_bronze_database, loader_warehouse
from stock_platform_tests.ingestion.ingest_helpers import ASSETS, closed_minute, produce, valid_messages
from stock_platform_tests.kafka_topics import PAST_MINUTES

if TYPE_CHECKING:  # dagster_snowflake takes seconds to import: only where a test uses it
    from dagster_snowflake import SnowflakeResource


pytestmark = pytest.mark.integration


@pytest.fixture
def snowflake_schema(fakesnow_server) -> SnowflakeResource:
    """A fresh database with the raw table and stage as sql/snowflake/setup.sql creates them."""
    database = create_bronze_database(fakesnow_server, "STOCK", raw_table=True)
    return bronze_resource(fakesnow_server, database)


def minute_counts(resource: SnowflakeResource) -> dict[str, int]:
    with resource.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT V:minute::STRING, COUNT(*), COUNT(DISTINCT V:kafka_partition::STRING || ':' || "
            f"V:kafka_offset::STRING) FROM {resource.database}.BRONZE.BRONZE_STOCK_QUOTES_RAW GROUP BY 1"
        )
        rows = cursor.fetchall()
    assert all(total == distinct for _, total, distinct in rows), rows
    return {minute: total for minute, total, _ in rows}


def test_snowflake_load_replaces_the_minute_without_duplicates(
    kafka_broker, new_topic, snowflake_schema, tmp_path: Path
):
    topic = new_topic(2)
    first, second = closed_minute(35), closed_minute(34)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(first, 11))
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(second, 6))
    warehouse = loader_warehouse(snowflake_schema)
    resources = {
        "kafka": KafkaResource(bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic, **PAST_MINUTES),
        "object_store": LocalObjectStore(root=str(tmp_path / "lake")),
        "warehouse": warehouse,
    }

    result = dg.materialize(ASSETS, partition_key=first, resources=resources)
    [table] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path == ["raw_quote_table"]
    ]
    assert table.materialization.metadata["rows"].value == 11
    assert minute_counts(snowflake_schema) == {minute_iso(first): 11}

    dg.materialize(ASSETS, partition_key=first, resources=resources)
    dg.materialize(ASSETS, partition_key=second, resources=resources)
    assert minute_counts(snowflake_schema) == {minute_iso(first): 11, minute_iso(second): 6}
    assert warehouse.minute_row_count(first) == 11

    # A cadence of N minutes: both minutes re-loaded in one transaction, still no duplicates.
    both = dg.materialize(
        ASSETS,
        resources=resources,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": second},
    )
    assert both.success
    assert minute_counts(snowflake_schema) == {minute_iso(first): 11, minute_iso(second): 6}
