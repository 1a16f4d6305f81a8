"""A minute is the broker's arrival minute: producers' clocks cannot move a record, hide one, or skip one.

Against the real broker: a LogAppendTime topic written by producers whose clocks are wrong in every
direction; a CreateTime topic refused with the command that fixes it; records older than the
partitions window taken in by the window's first minute instead of being skipped without a trace.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from types import SimpleNamespace

import dagster as dg
import duckdb
import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition

from stock_platform.ingestion import assets
from stock_platform.orchestration import sensors
from stock_platform.orchestration.sensors import LagSensorConfig, kafka_lag_sensor
from stock_platform.partitions import MINUTE_MS, minute_key_from_ms, minute_window, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource
from stock_platform_tests.ingestion.ingest_helpers import (
    ASSETS,
    closed_minute,
    make_resources,
    produce,
    quote,
    valid_messages,
)
from stock_platform_tests.kafka_topics import ordered_producer

pytestmark = pytest.mark.integration


def materialize(resources: dict, key: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, partition_key=key, resources=resources, raise_on_error=raise_on_error)


def raw_rows(db_path) -> list[tuple[str, int, int, str]]:
    with duckdb.connect(str(db_path), read_only=True) as conn:
        return conn.execute(
            "select strftime(minute, '%Y-%m-%d-%H:%M'), kafka_partition, kafka_offset, v::varchar "
            "from main.bronze_stock_quotes_raw order by 2, 3"
        ).fetchall()


def test_minutes_follow_the_brokers_append_time_whatever_the_producers_clocks_say(
    kafka_broker, new_topic, tmp_path
):
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(2, append_time=True)
    now_ms = int(time.time() * 1000)
    # Producers an hour ahead, a day behind, on time, ten years ahead, ten minutes behind: each stamps
    # its messages with its own clock (which the broker replaces) and carries it as fetched_at (data).
    skews = [3_600_000, -86_400_000, 0, 10 * 365 * 86_400_000, -600_000, 1_000]
    messages = []
    for i in range(24):
        clock = now_ms + skews[i % len(skews)]
        messages.append((i % 2, clock, encode_record(quote(i, clock, symbol=f"S{i % 3}"))))
    produced_from = int(time.time() * 1000)
    produce(bootstrap, topic, messages)
    produced_to = int(time.time() * 1000)
    first, last = minute_key_from_ms(produced_from), minute_key_from_ms(produced_to)

    # Every message carries the broker's append time, within the moments it was produced.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"peek-{topic}", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < len(messages) and time.monotonic() < deadline:
        seen += [m for m in consumer.consume(100, timeout=1) if m.error() is None]
    consumer.close()
    assert len(seen) == len(messages)
    for m in seen:
        kind, stamp = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert produced_from - 1_000 <= stamp <= produced_to + 1_000

    # Close the minute(s): wait for the next minute, then a record on each partition past the end.
    end_ms = minute_window_ms(last)[1]
    time.sleep(max(0.0, (end_ms - time.time() * 1000) / 1000) + 0.2)
    closer = quote(999, int(time.time() * 1000), symbol="CLOSE")
    produce(bootstrap, topic, [(p, 0, encode_record(closer)) for p in (0, 1)])

    resources = make_resources(
        bootstrap, topic, tmp_path, kafka=KafkaResource(bootstrap_servers=bootstrap, topic=topic)
    )
    keys = [first] if first == last else [first, last]
    for key in keys:
        result = materialize(resources, key)
        assert result.success

    rows = raw_rows(tmp_path / "warehouse.duckdb")
    # Each record exactly once (offsets 0..n-1 per partition), in the minute the broker appended it.
    assert sorted((p, o) for _, p, o, _ in rows) == sorted(
        (p, o) for p in (0, 1) for o in range(sum(1 for m in messages if m[0] == p))
    )
    for minute, _, _, v in rows:
        envelope = json.loads(v)
        assert minute_key_from_ms(envelope["kafka_timestamp_ms"]) == minute
        assert minute in keys
    assert sorted(json.loads(v)["quote"]["seq"] for *_, v in rows) == list(range(len(messages)))
    committed = resources["kafka"].committed_offsets()
    assert committed == {p: sum(1 for m in messages if m[0] == p) for p in (0, 1)}


def test_a_topic_that_keeps_producer_time_is_refused_with_the_command_that_fixes_it(
    kafka_broker, new_topic, tmp_path, monkeypatch
):
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(1)  # CreateTime, Kafka's default
    key = closed_minute(12)
    produce(bootstrap, topic, valid_messages(key, 3, partitions=1))
    kafka = KafkaResource(bootstrap_servers=bootstrap, topic=topic, ingest_group=f"g-{topic}")
    resources = make_resources(bootstrap, topic, tmp_path, kafka=kafka)

    result = materialize(resources, key, raise_on_error=False)

    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert failure.step_key == "kafka_quote_batch"
    assert "message.timestamp.type=CreateTime" in description
    assert f"stock-platform topic ensure --topic {topic} --bootstrap-servers {bootstrap}" in description

    monkeypatch.setattr(sensors, "now_ms", lambda: minute_window_ms(key)[1] + 3 * MINUTE_MS)
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"kafka": kafka, "lag_sensor": LagSensorConfig()}
    )
    skipped = kafka_lag_sensor(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "stock-platform topic ensure" in (skipped.skip_message or "")


def test_records_older_than_the_partitions_window_are_loaded_by_its_first_minute(
    kafka_broker, new_topic, tmp_path, monkeypatch
):
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(2)
    window_start, older = closed_minute(30), closed_minute(45)
    produce(bootstrap, topic, valid_messages(older, 5))
    produce(bootstrap, topic, valid_messages(window_start, 4, seq_start=100))
    # The window begins at window_start: the five older records have no minute of their own.
    monkeypatch.setattr(assets, "minute_partitions", SimpleNamespace(start=minute_window(window_start)[0]))
    resources = make_resources(bootstrap, topic, tmp_path)

    first = materialize(resources, window_start)
    rerun = materialize(resources, window_start)  # after the commit: still the same records

    for result in (first, rerun):
        [batch] = [
            e for e in result.get_asset_materialization_events() if e.asset_key.path == ["kafka_quote_batch"]
        ]
        assert batch.materialization.metadata["records"].value == 9
    rows = raw_rows(tmp_path / "warehouse.duckdb")
    assert sorted((p, o) for _, p, o, _ in rows) == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 0),
        (1, 1),
        (1, 2),
        (1, 3),
    ]
    assert {minute for minute, *_ in rows} == {window_start}
    assert sorted(json.loads(v)["quote"]["seq"] for *_, v in rows) == [0, 1, 2, 3, 4, 100, 101, 102, 103]
    assert resources["kafka"].committed_offsets() == {0: 5, 1: 4}


def test_the_windows_first_minute_reads_from_the_group_position_not_before_it(kafka_broker, new_topic):
    # Once the group is past the older records, the first minute reads only its own range.
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(1)
    key, older = closed_minute(20), closed_minute(25)
    produce(bootstrap, topic, valid_messages(older, 3, partitions=1))
    produce(bootstrap, topic, valid_messages(key, 2, partitions=1, seq_start=50))
    kafka = KafkaResource(
        bootstrap_servers=bootstrap, topic=topic, ingest_group=f"g-{topic}", require_log_append_time=False
    )
    with kafka.consumer() as consumer:
        assert (
            kafka.minute_batch(key, consumer=consumer, floor=kafka.positions(consumer)).ranges_text()
            == "0:0-5"
        )
        kafka.commit_ends({0: 3})
        assert (
            kafka.minute_batch(key, consumer=consumer, floor=kafka.positions(consumer)).ranges_text()
            == "0:3-5"
        )
        assert kafka.minute_batch(key, consumer=consumer).ranges_text() == "0:3-5"
    assert dt.datetime.now(dt.UTC) > minute_window(key)[1]


def test_a_long_runs_minutes_get_the_offsets_their_records_timestamps_give(kafka_broker, new_topic):
    """A catch-up run's minute boundaries are looked up over several connections at once
    (resources/kafka.py, LOOKUP_CONNECTIONS): every minute's range is still the one its records'
    timestamps give, with empty minutes, a partition quiet for a stretch, and records on a boundary."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(3)
    minutes = 45
    first_ms = (int(time.time() * 1000) // MINUTE_MS - minutes - 5) * MINUTE_MS
    stamps: dict[int, list[int]] = {0: [], 1: [], 2: []}
    messages = []
    for i in range(900):
        partition, at = i % 3, first_ms + (i * 7919) % (minutes * MINUTE_MS)
        if i % 40 == 0:
            at -= (at - first_ms) % MINUTE_MS  # on a minute's first millisecond
        minute = (at - first_ms) // MINUTE_MS
        if (partition == 2 and 10 <= minute < 25) or 30 <= minute < 33:
            continue  # partition 2 quiet for 15 minutes; three minutes without any record
        messages.append((partition, at, encode_record(quote(i, at))))
    messages.sort(key=lambda m: m[1])  # appended in time order, as on a LogAppendTime topic
    for partition, at, _ in messages:
        stamps[partition].append(at)
    produce(bootstrap, topic, messages)
    kafka = KafkaResource(bootstrap_servers=bootstrap, topic=topic, require_log_append_time=False)
    keys = [minute_key_from_ms(first_ms + m * MINUTE_MS) for m in range(minutes)]

    batches = kafka.minute_batches(keys)

    def first_at_or_after(partition: int, at: int) -> int:
        return next((o for o, t in enumerate(stamps[partition]) if t >= at), len(stamps[partition]))

    for key, batch in zip(keys, batches, strict=True):
        start_ms, end_ms = minute_window_ms(key)
        expected = {p: (first_at_or_after(p, start_ms), first_at_or_after(p, end_ms)) for p in stamps}
        assert {r.partition: (r.start, r.end) for r in batch.ranges} == expected, key
    assert sum(b.record_count for b in batches) == len(messages)
    assert [b.record_count for b in batches[30:33]] == [0, 0, 0]


def test_the_first_pending_records_are_found_on_every_partition_from_large_batches(kafka_broker, new_topic):
    """The lag sensor's look at the first record not yet ingested (one fetch per partition,
    resources/kafka.py PEEK_TUNING) answers every partition with lag, from the group's committed offset
    or the start of the log, when the records sit in large producer batches."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(6)
    first_ms = (int(time.time() * 1000) // MINUTE_MS - 30) * MINUTE_MS
    stamps: dict[int, list[int]] = {p: [] for p in range(6)}
    producer = ordered_producer(bootstrap, **{"linger.ms": 200, "batch.size": 1_000_000})
    for i in range(12_000):
        partition, at = i % 6, first_ms + i * 10
        stamps[partition].append(at)
        producer.produce(topic, encode_record(quote(i, at)), key=b"AAPL", partition=partition, timestamp=at)
        producer.poll(0)
    assert producer.flush(30) == 0
    kafka = KafkaResource(bootstrap_servers=bootstrap, topic=topic, require_log_append_time=False)
    committed = {0: 0, 1: 1, 2: 999, 3: 1_500, 4: 1_999}  # partition 4: one record left; 5: never committed
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": kafka.ingest_group})
    group.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()], asynchronous=False)
    group.close()

    expected = {p: stamps[p][committed.get(p, 0)] for p in range(6)}
    assert kafka.first_pending_timestamps() == expected
    snapshot = kafka.snapshot(now_ms=int(time.time() * 1000), recent_ms=60_000)
    assert snapshot.first_pending_ms == min(expected.values())
    assert kafka.next_record_ms(first_ms + 1_234) == first_ms + 1_240
