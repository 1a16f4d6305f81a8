"""The Snowflake raw table on fakesnow: keyed by (topic, minute), the ledger written in the load's
transaction, and a rebuild of the raw table from a lake."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from stock_platform.ingestion import lake
from stock_platform.ingestion.rebuild import rebuild_raw
from stock_platform.object_keys import minute_iso, raw_object_key
from stock_platform.partitions import minute_window
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform.resources.warehouse import MinuteFile
from stock_platform_tests.fakesnow_databases import bronze_resource, create_bronze_database, loader_warehouse
from stock_platform_tests.ingestion.lake_fixtures import envelopes, gzip_file, lake_envelope_ids, put_minute

if TYPE_CHECKING:  # dagster_snowflake takes seconds to import: only where a test uses it
    from dagster_snowflake import SnowflakeResource


pytestmark = pytest.mark.integration

KEY = "2026-11-28-08:00"


@pytest.fixture
def snowflake_bronze(fakesnow_server) -> SnowflakeResource:
    """A fresh database with the raw table and stage of sql/snowflake/setup.sql; the ledger is left to
    the warehouse resource, which creates it when missing."""
    database = create_bronze_database(fakesnow_server, "LEDGER", raw_table=True)
    return bronze_resource(fakesnow_server, database)


def query(resource: SnowflakeResource, sql: str) -> list[tuple]:
    with resource.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute(sql.format(db=f"{resource.database}.BRONZE"))
        return [tuple(row) for row in cursor.fetchall()]


def raw_ids(resource: SnowflakeResource) -> list[tuple[str, str, int, int]]:
    rows = query(
        resource,
        "SELECT V:topic::STRING, V:minute::STRING, V:kafka_partition::INT, V:kafka_offset::INT "
        "FROM {db}.BRONZE_STOCK_QUOTES_RAW",
    )
    return sorted((t, m, int(p), int(o)) for t, m, p, o in rows)


def test_snowflake_load_is_keyed_by_topic_and_minute_and_writes_the_ledger(snowflake_bronze, tmp_path: Path):
    warehouse = loader_warehouse(snowflake_bronze)
    second = "2026-11-28-08:01"

    def load(topic: str, counts: dict[str, int]) -> dict[str, int]:
        files = [
            MinuteFile(k, raw_object_key(topic, k), gzip_file(tmp_path, envelopes(topic, k, n)))
            for k, n in counts.items()
        ]
        return warehouse.load_minutes(topic, files)

    def by_topic() -> list[tuple]:
        return sorted(
            query(
                snowflake_bronze,
                "SELECT V:topic::STRING, V:minute::STRING, COUNT(*) FROM {db}.BRONZE_STOCK_QUOTES_RAW GROUP BY 1, 2",
            )
        )

    assert load("a", {KEY: 5, second: 0}) == {KEY: 5, second: 0}
    assert load("b", {KEY: 3}) == {KEY: 3}
    assert by_topic() == [("a", minute_iso(KEY), 5), ("b", minute_iso(KEY), 3)]
    assert load("a", {KEY: 2}) == {KEY: 2}  # a's re-load replaces a's minute, never b's
    assert by_topic() == [("a", minute_iso(KEY), 2), ("b", minute_iso(KEY), 3)]
    before = raw_ids(snowflake_bronze)
    assert load("a", {KEY: 2}) == {KEY: 2}  # idempotent
    assert raw_ids(snowflake_bronze) == before
    assert (warehouse.minute_row_count(KEY, "a"), warehouse.minute_row_count(KEY)) == (2, 5)

    # The ledger: the empty minute counts as loaded; windows are [start, end).
    assert warehouse.loaded_minutes("a") == {KEY: 2, second: 0}
    assert warehouse.loaded_minutes("b") == {KEY: 3}
    start, end = minute_window(second)
    assert warehouse.loaded_minutes("a", start, end) == {second: 0}
    assert warehouse.loaded_minutes("a", None, start) == {KEY: 2}
    assert query(snowflake_bronze, "SELECT COUNT(*) FROM {db}.BRONZE_RAW_LOADED_MINUTES") == [(3,)]

    # A failed load (a corrupt object) leaves both the table and the ledger as they were.
    bad = tmp_path / "bad.ndjson.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(Exception):  # noqa: B017 - the connector's error type is fakesnow's to choose
        warehouse.load_minutes("a", [MinuteFile(KEY, "k", bad)])
    assert raw_ids(snowflake_bronze) == before
    assert warehouse.loaded_minutes("a") == {KEY: 2, second: 0}

    # A ledger created after loads (a warehouse from before the ledger) starts from the table's minutes.
    query(snowflake_bronze, "DROP TABLE {db}.BRONZE_RAW_LOADED_MINUTES")
    fresh = loader_warehouse(snowflake_bronze)
    assert fresh.loaded_minutes("a") == {KEY: 2}  # the 0-row minute left no row to rebuild it from
    assert fresh.loaded_minutes("b") == {KEY: 3}


def test_snowflake_raw_table_is_rebuilt_from_the_lake(snowflake_bronze, tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "lake"))
    warehouse = loader_warehouse(snowflake_bronze)
    minutes = [f"2026-11-28-07:{m:02d}" for m in range(55, 60)]
    keys = [put_minute(store, "t", k, n) for k, n in zip(minutes, (3, 0, 4, 2, 5), strict=True)]
    put_minute(store, "other", minutes[0], 7)  # another topic in the same lake and table
    warehouse.load_minutes(
        "other", [MinuteFile(minutes[0], "o", gzip_file(tmp_path, envelopes("other", minutes[0], 7)))]
    )

    report = rebuild_raw(store, warehouse, "t", batch_minutes=2, log=lambda _: None)
    assert (report.minutes, report.rows, report.batches) == (minutes, 14, 3)
    t_rows = [row for row in raw_ids(snowflake_bronze) if row[0] == "t"]
    assert t_rows == lake_envelope_ids(store, keys)
    assert lake.coverage(store, warehouse, "t").passed

    again = rebuild_raw(store, warehouse, "t", minutes[1], minutes[3], log=lambda _: None)
    assert (again.minutes, again.rows) == (minutes[1:4], 6)
    assert [row for row in raw_ids(snowflake_bronze) if row[0] == "t"] == t_rows
    assert sum(1 for row in raw_ids(snowflake_bronze) if row[0] == "other") == 7
