"""Bad input straight into the topic: every kind is quarantined with its reason, and the good keep flowing.

One fresh topic, one closed minute, one materialization of kafka_quote_batch → raw_quote_object →
raw_quote_table against the real broker, with good records interleaved among the bad ones.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from stock_platform.ingestion.assets import kafka_quote_batch, raw_quote_object, raw_quote_table
from stock_platform.object_keys import dead_letter_object_key, raw_object_key
from stock_platform.partitions import minute_window, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse
from stock_platform_tests.ingestion.ingest_helpers import closed_minute, produce, quote
from stock_platform_tests.kafka_topics import PAST_MINUTES, by_offset

pytestmark = pytest.mark.integration

TICKER_RULE = "is not a ticker (A-Z, 0-9, '.', '-', ':', at most 20, nothing else)"
SQL_SYMBOL = "AAPL'; DROP TABLE bronze_stock_quotes_raw;--"
YEAR_MS = 365 * 86_400_000


@dataclass(frozen=True)
class Message:
    name: str
    partition: int
    timestamp_ms: int
    value: bytes | None
    reason: str | None  # None: a good record, which must reach the raw table
    key: bytes | None = None  # None: the record's symbol, as the producer keys it


def with_fields(record: dict[str, Any], **changes: Any) -> bytes:
    return encode_record({**record, **changes})


def without(record: dict[str, Any], field: str) -> bytes:
    return encode_record({k: v for k, v in record.items() if k != field})


def bad_kinds(seq: int, ts: int) -> list[tuple[str, bytes | None, str]]:
    """(name, value, reason) of each kind of bad input; a Kafka timestamp of ``ts``, inside the minute."""
    good = quote(seq, ts)  # price 190: h 191, l 189
    compact = encode_record(good)
    return [
        # Nesting past Python's recursion limit within the size limit: json raises RecursionError.
        ("deeply nested JSON", b"[" * 2000 + b"]" * 2000, "undecodable record (RecursionError)"),
        (
            "deeply nested field",
            compact.replace(b'"c":190.0', b'"c":' + b"[" * 1500 + b"]" * 1500),
            "undecodable record (RecursionError)",
        ),
        (
            "symbol with a trailing line break",
            with_fields(good, symbol="AAPL\n"),
            f"symbol 'AAPL\\n' {TICKER_RULE}",
        ),
        (
            "fractional quote time",
            with_fields(good, t=good["t"] + 0.5),
            f"quote time 't' must be an integer (epoch seconds), got {good['t'] + 0.5!r}",
        ),
        ("boolean schema version", with_fields(good, schema_version=True), "unsupported schema_version True"),
        (
            "implausible price",
            with_fields(good, c=1e300, h=1e300),
            "price field 'c' is outside [0.0001, 1e+07]: 1e+300",
        ),
        ("broken JSON", b'{"symbol": "AAPL", "c": ', "not JSON: Expecting value at char 24"),
        ("empty value", b"", "not JSON: Expecting value at char 0"),
        ("non-UTF-8", b"\xff\xfe{}", "not UTF-8: invalid start byte at byte 0"),
        ("JSON array", b"[1, 2]", "record must be a JSON object, got list"),
        ("JSON null", b"null", "record must be a JSON object, got NoneType"),
        ("tombstone", None, "empty message (tombstone)"),
        ("missing field", without(good, "c"), "missing field(s): c"),
        ("extra field", with_fields(good, extra=1), "unexpected field(s): extra"),
        ("string price", with_fields(good, c="190.0"), "field 'c' must be a number, got str"),
        ("bool price", with_fields(good, h=True), "field 'h' must be a number, got bool"),
        ("string seq", with_fields(good, seq="7"), "field 'seq' must be a non-negative integer, got '7'"),
        ("NaN", compact.replace(b'"c":190.0', b'"c":NaN'), "non-JSON number NaN"),
        ("Infinity", compact.replace(b'"h":191.0', b'"h":Infinity'), "non-JSON number Infinity"),
        ("-Infinity", compact.replace(b'"l":189.0', b'"l":-Infinity'), "non-JSON number -Infinity"),
        (
            "integer beyond 64 bits",
            compact.replace(b'"c":190.0', b'"c":1' + b"0" * 400),
            "field 'c' is an integer outside the 64-bit range",
        ),
        ("negative price", with_fields(good, c=-1.0), "price field 'c' must be positive, got -1.0"),
        ("zero price", with_fields(good, o=0), "price field 'o' must be positive, got 0.0"),
        ("high below low", with_fields(good, h=150.0), "high 150.0 is below low 189.0"),
        (
            "unknown symbol's all-zero quote",
            with_fields(good, symbol="ZZZZ", c=0, d=None, dp=None, h=0, l=0, o=0, pc=0, t=0),
            "all-zero quote (Finnhub's answer for an unknown symbol)",
        ),
        ("symbol with SQL", with_fields(good, symbol=SQL_SYMBOL), f"symbol {SQL_SYMBOL!r} {TICKER_RULE}"),
        ("lower-case symbol", with_fields(good, symbol="aapl"), f"symbol 'aapl' {TICKER_RULE}"),
        (
            "fetched_at after 2100",
            with_fields(good, fetched_at=ts + 80 * YEAR_MS),
            "field 'fetched_at' must be epoch milliseconds in [946684800000, 4102444800000)",
        ),
        (
            "fetched_at before 2000",
            with_fields(good, fetched_at=946_684_799_999, t=946_684_800),
            "field 'fetched_at' must be epoch milliseconds in [946684800000, 4102444800000)",
        ),
        (
            "quote time far in the future",
            with_fields(good, t=ts // 1000 + 86_400),
            "quote time 't' is more than 300 s after fetched_at",
        ),
        (
            # Python keeps the last "c" (valid), DuckDB reads the first: validated ≠ loaded.
            "duplicate field",
            compact.replace(b'"c":190.0', b'"c":-5.0,"c":190.0'),
            "duplicate field(s)",
        ),
        (
            # Valid JSON to Python, but DuckDB refuses a lone surrogate and with it the whole minute's file.
            "lone surrogate in run id",
            compact.replace(b'"test-run"', b'"run\\ud800"'),
            "field 'producer_run_id' must be a non-empty string of A-Z, a-z, 0-9, '.', '_', '-' (at most 64)",
        ),
        (
            "unknown source",
            with_fields(good, source="scraper"),
            "field 'source' must be one of finnhub, simulated, replay",
        ),
        ("schema version 2", with_fields(good, schema_version=2), "unsupported schema_version 2"),
        ("negative seq", with_fields(good, seq=-1), "field 'seq' must be a non-negative integer, got -1"),
        (
            "oversized message",
            compact[:-1] + b" " * (5000 - len(compact)) + b"}",
            "message of 5000 bytes exceeds 4096",
        ),
    ]


def good_kinds(seq: int, ts: int) -> list[tuple[str, int, bytes]]:
    """(name, Kafka timestamp, value) of records that look odd but are valid quotes."""
    pretty = json.dumps(quote(seq + 4, ts + 4), indent=2).encode()
    return [
        ("class-share symbol", ts, encode_record(quote(seq, ts, symbol="BRK.B", price=470.0))),
        ("exchange-prefixed symbol", ts + 1, encode_record(quote(seq + 1, ts + 1, symbol="BINANCE:BTCUSDT"))),
        # Finnhub's t is the last trade: a year old for a halted symbol, or as recorded in a replay.
        ("year-old quote time", ts + 2, with_fields(quote(seq + 2, ts + 2), t=(ts - YEAR_MS) // 1000)),
        # A producer whose clock is an hour behind the broker's: fetched_at is data, the minute is arrival.
        ("producer clock an hour behind", ts + 3, encode_record(quote(seq + 3, ts + 3 - 3_600_000))),
        ("producer clock a day ahead", ts + 3, encode_record(quote(seq + 5, ts + 3 + 86_400_000))),
        ("pretty-printed JSON", ts + 4, pretty),
    ]


def build_minute(start_ms: int) -> list[Message]:
    """Good and bad records alternating over the minute's first 50 s, over two Kafka partitions."""
    messages: list[Message] = []

    def add(name: str, ts: int, value: bytes | None, reason: str | None) -> None:
        messages.append(Message(name, len(messages) % 2, ts, value, reason))

    bad = bad_kinds(100, start_ms + 1_000)
    for i, (name, value, reason) in enumerate(bad):
        ts = start_ms + 1_000 + i * 1_000
        good = quote(i, ts + 500, symbol=f"S{i % 5}")
        add(f"good {i}", ts + 500, encode_record(good), None)
        add(name, ts, value, reason)
    for name, ts, value in good_kinds(200, start_ms + 40_000):
        add(name, ts, value, None)
    # Keyed by another symbol (or by nothing): not the producer's record, whatever its content claims.
    other_key = encode_record(quote(303, start_ms + 44_000, symbol="AMD"))
    messages.append(
        Message("key is another symbol", 0, start_ms + 44_000, other_key,
                "Kafka message has key 'INTC', not the record's symbol 'AMD'", b"INTC")
    )  # fmt: skip
    messages.append(
        Message("no key", 1, start_ms + 44_100, other_key,
                "Kafka message has no key, not the record's symbol 'AMD'", b"")
    )  # fmt: skip
    duplicate = encode_record(quote(300, start_ms + 45_000, symbol="MSFT"))
    add("duplicate, first copy", start_ms + 45_000, duplicate, None)
    add("duplicate, second copy", start_ms + 45_000, duplicate, None)
    # Out of order: the newer quote first, then one fetched 10 s earlier; both belong to the minute.
    add("newer", start_ms + 55_000, encode_record(quote(301, start_ms + 55_000, symbol="NVDA")), None)
    add(
        "older, after newer",
        start_ms + 45_500,
        encode_record(quote(302, start_ms + 45_500, symbol="NVDA")),
        None,
    )
    return messages


def gzip_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_every_kind_of_bad_input_is_quarantined_with_its_reason(kafka_broker, new_topic, tmp_path):
    topic = new_topic(2)
    key = closed_minute(35)
    start_ms, _ = minute_window_ms(key)
    messages = build_minute(start_ms)
    produce(
        kafka_broker.bootstrap_servers,
        topic,
        [(m.partition, m.timestamp_ms, m.value, *([m.key] if m.key is not None else [])) for m in messages],
    )
    placed = by_offset(messages)
    bad = {at: m for at, m in placed.items() if m.reason is not None}
    good = {at: m for at, m in placed.items() if m.reason is None}
    kinds = len(bad_kinds(0, start_ms)) + 2  # and the two wrongly keyed records
    assert (len(bad), len(good)) == (kinds, kinds - 2 + len(good_kinds(0, start_ms)) + 4)
    # Each kind has its own reason, but for two pairs: nesting (whole or in a field) and fetched_at's bounds.
    assert len({m.reason for m in bad.values()}) == len(bad) - 2
    resources = {
        "kafka": KafkaResource(
            bootstrap_servers=kafka_broker.bootstrap_servers,
            topic=topic,
            ingest_group=f"ingest-{topic}",
            **PAST_MINUTES,
        ),
        "object_store": LocalObjectStore(root=str(tmp_path / "lake")),
        "warehouse": DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb")),
    }
    assets = [kafka_quote_batch, raw_quote_object, raw_quote_table]

    result = dg.materialize(assets, partition_key=key, resources=resources)

    assert result.success
    assert metadata(result, "kafka_quote_batch")["records"] == len(placed)
    assert metadata(result, "raw_quote_object")["rows"] == len(good)
    assert metadata(result, "raw_quote_object")["dead_lettered_rows"] == len(bad)
    assert metadata(result, "raw_quote_table")["rows"] == len(good)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    no_dead_letters = evaluations["no_dead_letters"]
    assert (no_dead_letters.passed, no_dead_letters.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert no_dead_letters.metadata["dead_lettered_rows"].value == len(bad)
    assert evaluations["rows_match_raw_object"].passed

    dead_path = tmp_path / "lake" / dead_letter_object_key(topic, key)
    dead = {(d["kafka_partition"], d["kafka_offset"]): d for d in gzip_lines(dead_path)}
    assert sorted(dead) == sorted(bad)
    for at, m in bad.items():
        assert dead[at]["reason"] == m.reason, m.name
        assert dead[at]["kafka_timestamp_ms"] == m.timestamp_ms, m.name
        assert dead[at]["payload"] == (None if m.value is None else m.value.decode("utf-8", "replace")), (
            m.name
        )

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "select kafka_partition, kafka_offset, v::varchar from main.bronze_stock_quotes_raw where minute = ?",
            [minute_window(key)[0].replace(tzinfo=None)],
        ).fetchall()
    loaded = [(p, o) for p, o, _ in rows]
    assert sorted(loaded) == sorted(good)  # each good record once, no bad one
    for p, o, v in rows:
        envelope = json.loads(v)
        assert envelope["quote"] == json.loads(good[(p, o)].value), good[(p, o)].name  # type: ignore[arg-type]
        assert envelope["kafka_timestamp_ms"] == good[(p, o)].timestamp_ms
    quotes = {good[(p, o)].name: json.loads(v)["quote"] for p, o, v in rows}
    assert quotes["class-share symbol"]["symbol"] == "BRK.B"
    # Both copies of a duplicate are raw rows; silver_quotes keeps one per record id (dbt tests cover it).
    assert quotes["duplicate, first copy"] == quotes["duplicate, second copy"]
    assert quotes["older, after newer"]["fetched_at"] < quotes["newer"]["fetched_at"]

    table_before = sorted(rows)
    rerun = dg.materialize(assets, partition_key=key, resources=resources)
    assert metadata(rerun, "raw_quote_object")["dead_lettered_rows"] == len(bad)
    # The dead-letter object holds the same lines (read order across partitions may differ).
    assert sorted(map(json.dumps, gzip_lines(dead_path))) == sorted(json.dumps(d) for d in dead.values())
    assert len(gzip_lines(tmp_path / "lake" / raw_object_key(topic, key))) == len(good)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        again = conn.execute(
            "select kafka_partition, kafka_offset, v::varchar from main.bronze_stock_quotes_raw where minute = ?",
            [minute_window(key)[0].replace(tzinfo=None)],
        ).fetchall()
    assert sorted(again) == table_before
