"""Helpers for ingestion tests: quote records, the ingestion assets and resources, producing at chosen timestamps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stock_platform.ingestion.assets import (
    kafka_quote_batch,
    raw_quote_object,
    raw_quote_table,
    stock_quotes_topic,
)
from stock_platform.partitions import minute_key, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse
from stock_platform_tests.kafka_topics import PAST_MINUTES, ordered_producer, record_key

ASSETS = [stock_quotes_topic, kafka_quote_batch, raw_quote_object, raw_quote_table]


def quote(seq: int, fetched_at: int, symbol: str = "AAPL", price: float = 190.0) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "symbol": symbol,
        "c": price,
        "d": 1.5,
        "dp": 0.79,
        "h": price + 1,
        "l": price - 1,
        "o": price - 0.5,
        "pc": price - 1.5,
        "t": fetched_at // 1000,
        "fetched_at": fetched_at,
        "source": "simulated",
        "producer_run_id": "test-run",
        "seq": seq,
    }


def make_resources(bootstrap: str, topic: str, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Ingestion resources on the test broker, with a lake and a DuckDB file under ``tmp_path``."""
    resources: dict[str, Any] = {
        "kafka": KafkaResource(
            bootstrap_servers=bootstrap, topic=topic, ingest_group=f"ingest-{topic}", **PAST_MINUTES
        ),
        "object_store": LocalObjectStore(root=str(tmp_path / "lake")),
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb")),
    }
    resources.update(overrides)
    return resources


def closed_minute(minutes_ago: int = 30) -> str:
    """A minute well in the past (closed) yet inside the partitions definition."""
    return minute_key(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago))


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[Any, ...]]) -> None:
    """Produce (kafka_partition, timestamp_ms, value[, key]) messages, keyed by the record's symbol unless
    a key is given; waits for delivery."""
    producer = ordered_producer(bootstrap, **{"linger.ms": 5})
    failures: list[str] = []

    def report(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    for partition, timestamp_ms, value, *key in messages:
        producer.produce(topic, value=value, key=key[0] if key else record_key(value), partition=partition, timestamp=timestamp_ms,
                         on_delivery=report)  # fmt: skip
    assert producer.flush(30) == 0
    assert failures == []


def valid_messages(partition_key: str, count: int, partitions: int = 2, seq_start: int = 0):
    """``count`` valid quotes spread over the minute, round-robin over partitions."""
    start_ms, _ = minute_window_ms(partition_key)
    for i in range(count):
        ts = start_ms + i * 59_000 // max(count, 1)
        yield i % partitions, ts, encode_record(quote(seq_start + i, ts, symbol=f"S{i % 7}"))
