"""Raw objects written straight into a lake (no Kafka), for tests of loading, the ledger and rebuilds."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

from stock_platform.object_keys import minute_iso, raw_object_key
from stock_platform.partitions import minute_window_ms
from stock_platform.resources.object_store import ObjectStore
from stock_platform_tests.ingestion.ingest_helpers import quote


def envelopes(topic: str, partition_key: str, count: int, offset_start: int = 0) -> list[dict]:
    """``count`` envelopes of the minute as raw_quote_object writes them, on Kafka partitions 0 and 1."""
    start_ms, _ = minute_window_ms(partition_key)
    key = raw_object_key(topic, partition_key)
    return [
        {
            "minute": minute_iso(partition_key),
            "topic": topic,
            "kafka_partition": i % 2,
            "kafka_offset": offset_start + i,
            "kafka_timestamp_ms": start_ms + i,
            "object_key": key,
            "quote": quote(offset_start + i, start_ms + i, symbol=f"S{i % 3}"),
        }
        for i in range(count)
    ]


def gzip_file(folder: Path, lines: list[dict]) -> Path:
    path = folder / f"{uuid.uuid4().hex}.ndjson.gz"
    path.write_bytes(gzip.compress(b"".join(json.dumps(line).encode() + b"\n" for line in lines)))
    return path


def put_minute(store: ObjectStore, topic: str, partition_key: str, count: int, offset_start: int = 0) -> str:
    """Publish the minute's raw object (with the metadata raw_quote_table reads); return its key."""
    lines = envelopes(topic, partition_key, count, offset_start)
    key = raw_object_key(topic, partition_key)
    ranges = (
        f"0:{offset_start}-{offset_start + (count + 1) // 2},1:{offset_start}-{offset_start + count // 2}"
    )
    store.put_file(
        key,
        gzip_file(store.staging_dir(), lines),
        {"topic": topic, "minute": minute_iso(partition_key), "rows": str(count), "kafka-offsets": ranges},
    )
    return key


def lake_envelope_ids(store: ObjectStore, keys: list[str]) -> list[tuple[str, str, int, int]]:
    """(topic, minute, kafka_partition, kafka_offset) of every envelope in the given raw objects, sorted."""
    ids = []
    for key in keys:
        for line in gzip.decompress(store.get_bytes(key)).splitlines():
            e = json.loads(line)
            ids.append((e["topic"], e["minute"], int(e["kafka_partition"]), int(e["kafka_offset"])))
    return sorted(ids)
