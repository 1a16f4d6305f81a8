"""Raw-table rows for dbt tests and the benchmark: quote records wrapped in the envelope of docs/contracts.md.

The tests build the raw table themselves, so dbt is tested against exactly the contract, not against
whatever the ingestion assets happen to write.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stock_platform.resources.warehouse import DUCKDB_RAW_TABLE_DDL

TOPIC = "stock-quotes"


@dataclass(frozen=True)
class Quote:
    """The parts of a quote record a test varies; the rest is derived."""

    symbol: str
    t: int  # Finnhub quote time, epoch seconds
    fetched_at_ms: int
    price: float
    seq: int
    producer_run_id: str = "run-1"
    day_high: float | None = None
    day_low: float | None = None

    @property
    def record_id(self) -> str:
        return f"{self.producer_run_id}:{self.seq}"

    def record(self) -> dict[str, Any]:
        high = self.day_high if self.day_high is not None else self.price + 5
        low = self.day_low if self.day_low is not None else max(self.price - 5, 0.01)
        return {
            "schema_version": 1,
            "symbol": self.symbol,
            "c": self.price,
            "d": round(self.price - 100.0, 4),
            "dp": round(self.price - 100.0, 4),
            "h": high,
            "l": low,
            "o": 100.0,
            "pc": 100.0,
            "t": self.t,
            "fetched_at": self.fetched_at_ms,
            "source": "simulated",
            "producer_run_id": self.producer_run_id,
            "seq": self.seq,
        }


def minute_of(epoch_ms: int) -> dt.datetime:
    """Naive UTC minute of an epoch-ms timestamp (the partition of a Kafka message)."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).replace(tzinfo=None)
    return moment.replace(second=0, microsecond=0)


def envelope(
    record: Any,
    kafka_partition: int,
    kafka_offset: int,
    minute: dt.datetime | None = None,
    topic: str = TOPIC,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """The envelope of one message loaded into ``minute`` (naive UTC; default: the minute of its
    ``fetched_at``, for a producer whose clock agrees with the broker's). ``record`` may be anything."""
    if minute is None:
        minute = minute_of(record["fetched_at"])
        timestamp_ms = record["fetched_at"] if timestamp_ms is None else timestamp_ms
    if timestamp_ms is None:
        timestamp_ms = int(minute.replace(tzinfo=dt.UTC).timestamp() * 1000)
    return {
        "minute": minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "topic": topic,
        "kafka_partition": kafka_partition,
        "kafka_offset": kafka_offset,
        "kafka_timestamp_ms": timestamp_ms,
        "object_key": f"raw/{topic}/{minute:%Y/%m/%d/%H%M}/p{kafka_partition}.ndjson.gz",
        "quote": record,
    }


def envelopes(records: Iterable[dict[str, Any]], first_offset: int = 0) -> list[dict[str, Any]]:
    """Envelopes on Kafka partition 0 at consecutive offsets."""
    return [envelope(r, 0, first_offset + i) for i, r in enumerate(records)]


def duckdb_rows(envs: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for env in envs:
        minute = dt.datetime.strptime(env["minute"], "%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            (
                json.dumps(env),
                minute,
                env["object_key"],
                env["kafka_partition"],
                env["kafka_offset"],
                minute,
                env["topic"],
            )
        )
    return rows


def insert_duckdb(conn: Any, envs: Sequence[dict[str, Any]]) -> None:
    """Append envelopes to DuckDB's raw table (created if missing), in the contract's layout."""
    conn.execute(DUCKDB_RAW_TABLE_DDL)
    if envs:
        conn.executemany(
            "insert into main.bronze_stock_quotes_raw values (?, ?, ?, ?, ?, ?, ?)", duckdb_rows(envs)
        )


def insert_snowflake(conn: Any, envs: Sequence[dict[str, Any]]) -> None:
    """Append envelopes to Snowflake's BRONZE_STOCK_QUOTES_RAW(V VARIANT), created if missing."""
    cur = conn.cursor()
    cur.execute("create table if not exists bronze_stock_quotes_raw (v variant)")
    # PARSE_JSON cannot take a bind in a VALUES list on Snowflake, hence INSERT ... SELECT per chunk.
    for start in range(0, len(envs), 500):
        chunk = envs[start : start + 500]
        selects = " union all ".join("select parse_json(%s)" for _ in chunk)
        cur.execute(f"insert into bronze_stock_quotes_raw (v) {selects}", [json.dumps(e) for e in chunk])
    cur.close()
