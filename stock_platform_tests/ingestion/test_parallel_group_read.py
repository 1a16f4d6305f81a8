"""A catch-up run's groups of minutes read by read workers, two at a time (assets._built_groups and
minute_object.write_minute_groups_parallel), against a real broker and DuckDB.

The reference is the same run read in the run's own process (read_workers=1): every minute's raw and
dead-letter objects must hold the same lines, the raw table the same rows and the run the same totals,
whatever the minutes' sizes, invalid records and empty minutes. A worker Kafka fails leaves no staging
file behind.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import dagster as dg
import pytest

from stock_platform.ingestion import assets
from stock_platform.object_keys import dead_letter_object_key, raw_object_key
from stock_platform.partitions import minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource, MinuteBatch, OffsetRange
from stock_platform.resources.kafka_reader import KafkaReadFailed
from stock_platform_tests.ingestion.ingest_helpers import (
    ASSETS,
    closed_minute,
    make_resources,
    produce,
    quote,
)
from stock_platform_tests.kafka_topics import PAST_MINUTES

pytestmark = pytest.mark.integration

INVALID = [b"not json", b"{}", b'{"symbol": "AAPL"}']


def minute_messages(rng: random.Random, key: str, partitions: int, seq: int) -> list[tuple[int, int, bytes]]:
    """1-40 records over the minute (none in one minute of five), on random partitions, about one in eight
    invalid."""
    start_ms, _ = minute_window_ms(key)
    messages = []
    for i in range(0 if rng.random() < 0.2 else rng.randint(1, 40)):
        ts = start_ms + rng.randint(0, 59_999)
        value = (
            rng.choice(INVALID)
            if rng.random() < 0.125
            else encode_record(quote(seq + i, ts, symbol=f"S{i % 5}"))
        )
        messages.append((rng.randrange(partitions), ts, value))
    return messages


def lines(path: Path) -> list[bytes]:
    return sorted(gzip.decompress(path.read_bytes()).splitlines()) if path.exists() else []


def run_range(resources: dict, minutes: list[str]) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": minutes[0],
            "dagster/asset_partition_range_end": minutes[-1],
        },
    )


def table(db_path: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(
            "select minute, kafka_partition, kafka_offset, v::varchar from main.bronze_stock_quotes_raw order by all"
        ).fetchall()


def object_metadata(result: dg.ExecuteInProcessResult) -> dict:
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "raw_quote_object"
    ]
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_groups_read_by_workers_build_what_the_run_process_builds(
    kafka_broker, new_topic, tmp_path, monkeypatch, seed
):
    rng = random.Random(seed)
    partitions = rng.randint(1, 3)
    topic = new_topic(partitions)
    minutes = [closed_minute(m) for m in range(60, 60 - rng.randint(4, 9), -1)]
    counts = []
    for i, key in enumerate(minutes):
        messages = minute_messages(rng, key, partitions, 1000 * i)
        produce(kafka_broker.bootstrap_servers, topic, messages)
        counts.append(len(messages))
    # Groups of a few minutes, so the run has several and the workers take turns.
    monkeypatch.setattr(assets, "GROUP_READ_RECORDS", max(1, sum(counts) // rng.randint(2, 5)))
    bootstrap = kafka_broker.bootstrap_servers
    runs = {}
    for name, workers in (("process", 1), ("workers", 2)):
        resources = make_resources(bootstrap, topic, tmp_path / name)
        resources["kafka"] = KafkaResource(
            bootstrap_servers=bootstrap,
            topic=topic,
            ingest_group=f"ingest-{name}",
            read_workers=workers,
            **PAST_MINUTES,
        )
        runs[name] = run_range(resources, minutes)

    sized = [
        MinuteBatch(topic, k, (OffsetRange(0, 0, n),), "records")
        for k, n in zip(minutes, counts, strict=True)
    ]
    assert len(assets.read_groups(sized, parallel_threshold=200_000)) > 1, "the run must have several groups"
    for key in minutes:
        for object_key in (raw_object_key(topic, key), dead_letter_object_key(topic, key)):
            assert lines(tmp_path / "process" / "lake" / object_key) == lines(
                tmp_path / "workers" / "lake" / object_key
            ), object_key
    loaded = table(tmp_path / "process" / "warehouse.duckdb")
    assert len(loaded) == object_metadata(runs["process"])["rows"] > 0
    assert table(tmp_path / "workers" / "warehouse.duckdb") == loaded
    by_process, by_workers = object_metadata(runs["process"]), object_metadata(runs["workers"])
    for field in (
        "rows",
        "dead_lettered_rows",
        "bytes",
        "offset_ranges",
        "min_event_time",
        "max_event_time",
        "minutes",
    ):
        assert by_process.get(field) == by_workers.get(field), field
    for name in runs:
        assert list((tmp_path / name / "lake" / ".staging").iterdir()) == [], "no staging file is left"


def test_a_worker_kafka_fails_ends_the_read_clearly_and_leaves_no_staging_file(tmp_path):
    # A broker that is not there: each worker stalls after timeout_seconds and exits with READ_FAILED_EXIT.
    kafka = KafkaResource(
        bootstrap_servers="127.0.0.1:9", topic="nowhere", read_workers=2, timeout_seconds=1.0
    )
    batches = [
        MinuteBatch("nowhere", f"2026-11-28-08:{m:02d}", (OffsetRange(0, 10 * m, 10 * m + 5),), "records")
        for m in range(4)
    ]
    staging = tmp_path / "staging"
    staging.mkdir()

    with pytest.raises(KafkaReadFailed, match="stalled"):
        for _ in assets._built_groups(kafka, [batches[:2], batches[2:]], staging):
            pass

    assert list(staging.iterdir()) == []
