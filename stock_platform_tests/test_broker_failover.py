"""Kafka loses a broker mid-minute: the producer and the ingestion lose and duplicate nothing.

Three real KRaft nodes (KafkaCluster), the quote topic replicated 3 times with min.insync.replicas 2,
the real producer CLI (simulated source) in its own process, and the ingestion assets run as Dagster runs
them. The node that leads a quote partition (the ingest group's coordinator, when it leads one) is
SIGKILLed a few seconds into a minute, while quotes flow:

- the minute(s) before the kill are ingested at once: their offset lookups need the dead leader's
  partition, so the run waits out the election (the assets' retry policy) and then loads them;
- the producer keeps producing; the minute of the kill is ingested once it closes, the node still down;
- the node is restarted, leads its partitions again, and every minute is ingested again: nothing changes.

What reached Kafka and the raw table is checked against the producer's own record: its summary says how
many quotes it delivered, and quote ``seq`` i is the i-th symbol of the round-robin over the symbols this
test passes (an independent computation), so every (symbol, seq) must be there exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from stock_platform.kafka_topic import (
    APPEND_TIME,
    CREATED,
    MIN_INSYNC_REPLICAS,
    TIMESTAMP_TYPE,
    ensure_quote_topic,
)
from stock_platform.partitions import MINUTE_MS, minute_key_from_ms, minute_window_ms
from stock_platform.resources.kafka import KafkaResource
from stock_platform.services.kafka_cluster import KafkaCluster
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform_tests.ingestion.ingest_helpers import ASSETS, make_resources
from stock_platform_tests.producer.kafka_helpers import consume_all

# Three nodes and a 3-minute budget on two shared cores: slow as well as integration.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
# Made-up tickers passed with --symbols: seq i is SYMBOLS[i % len(SYMBOLS)] whatever the producer's code.
SYMBOLS = [f"FO{i:02d}" for i in range(30)]
RATE = 150  # quotes/s: every partition gets records every few milliseconds
KILL_INTO_MINUTE_S = 10  # the kill lands mid-minute, with records of the minute before and after it
STOP_INTO_MINUTE_S = 48  # the producer stops early enough that its last records stay in the kill's minute
RECOVERY_LIMIT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    # A missing java or mvn raises MissingPrerequisite here: the test errors, it is never skipped.
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def ingest(resources: dict[str, Any], keys: list[str]) -> None:
    """One run per minute, oldest first, as the lag sensor requests them."""
    for key in keys:
        dg.materialize(ASSETS, partition_key=key, resources=resources)


def minutes(first: str, last: str) -> list[str]:
    start, _ = minute_window_ms(first)
    end, _ = minute_window_ms(last)
    return [minute_key_from_ms(ms) for ms in range(start, end + 1, MINUTE_MS)]


def high_watermarks(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def start_producer(bootstrap: str, topic: str, log_dir: Path) -> subprocess.Popen:
    """`stock-platform produce` in its own process, as it runs beside the platform."""
    argv = [sys.executable, "-m", "stock_platform.producer.cli", "--source", "simulated",
            "--symbols", ",".join(SYMBOLS), "--rate", str(RATE), "--bootstrap-servers", bootstrap,
            "--topic", topic, "--dlq-topic", f"{topic}-dlq", "--duration", "170", "--log-interval", "5"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "FINNHUB_API_KEY"}
    return subprocess.Popen(
        argv,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=(log_dir / "producer.out").open("wb"),
        stderr=(log_dir / "producer.err").open("wb"),
    )


def victim_of(cluster: KafkaCluster, topic: str, group: str) -> tuple[int, int, bool]:
    """(node, partition, coordinator): the ingest group's coordinator if it leads a quote partition (the
    strongest case: the run loses a partition leader and its coordinator at once), else partition 0's
    leader."""
    admin = cluster.admin()  # kept alive until its future resolves
    coordinator = admin.describe_consumer_groups([group])[group].result(timeout=10).coordinator.id
    leaders = {p: meta.leader for p, meta in cluster.partitions(topic).items()}
    led = sorted(p for p, node in leaders.items() if node == coordinator)
    return (coordinator, led[0], True) if led else (leaders[0], 0, False)


def table_rows(db_path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db_path), read_only=True) as conn:
        return conn.execute(
            """select kafka_partition, kafka_offset, v->'quote'->>'symbol', (v->'quote'->>'seq')::bigint,
                      v->'quote'->>'producer_run_id', strftime(minute, '%Y-%m-%d-%H:%M'),
                      (v->>'kafka_timestamp_ms')::bigint
               from main.bronze_stock_quotes_raw order by 1, 2"""
        ).fetchall()


def test_a_partition_leader_killed_mid_minute_loses_and_duplicates_nothing(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    admin = cluster.admin()
    # The project's topic setup, as an operator runs it against a real cluster.
    assert (
        ensure_quote_topic(admin, topic, PARTITIONS, replication_factor=3, min_insync_replicas=2) == CREATED
    )
    cluster.wait_in_sync(topic)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert (config[TIMESTAMP_TYPE].value, config[MIN_INSYNC_REPLICAS].value) == (APPEND_TIME, "2")
    assert all(len(p.replicas) == 3 for p in cluster.partitions(topic).values())

    group = f"ingest-{topic}"
    kafka = KafkaResource(bootstrap_servers=bootstrap, topic=topic, ingest_group=group)  # production defaults
    resources = make_resources(bootstrap, topic, tmp_path, kafka=kafka)
    # A running platform's group has long had its offsets on the cluster; asking for them once creates
    # the offsets topic here (replicated 3 times), as it exists on a real cluster before any broker dies.
    assert kafka.committed_offsets() == dict.fromkeys(range(PARTITIONS))

    first_minute = minute_key_from_ms(int(time.time() * 1000))
    producer = start_producer(bootstrap, topic, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while sum(high_watermarks(bootstrap, topic).values()) == 0:
            assert producer.poll() is None, (tmp_path / "producer.err").read_text()[-3000:]
            assert time.monotonic() < deadline, "the producer delivered nothing within 60 s"
            time.sleep(0.2)
        # The kill lands KILL_INTO_MINUTE_S into the next minute, so the minutes before it hold records.
        now_ms = int(time.time() * 1000)
        kill_minute_start = now_ms - now_ms % MINUTE_MS + MINUTE_MS
        time.sleep((kill_minute_start + KILL_INTO_MINUTE_S * 1000 - now_ms) / 1000)

        node, partition, coordinator = victim_of(cluster, topic, group)
        cluster.kill(node)
        # Taken once the process is gone: any record stamped later was appended by another node.
        kill_ms = int(time.time() * 1000)
        killed_at = time.monotonic()
        kill_minute = minute_key_from_ms(kill_ms)
        earlier = minutes(first_minute, minute_key_from_ms(kill_ms - MINUTE_MS))
        # While the producer keeps going in its own process; bounded by the assets' retry policies.
        ingest(resources, earlier)
        ingest_recovery_s = time.monotonic() - killed_at

        time.sleep(max(0.0, (kill_minute_start + STOP_INTO_MINUTE_S * 1000) / 1000 - time.time()))
        producer.send_signal(signal.SIGTERM)
        code = producer.wait(90)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(10)
    stopped_ms = int(time.time() * 1000)
    out = (tmp_path / "producer.out").read_text().strip().splitlines()
    assert code == 0, (tmp_path / "producer.err").read_text()[-3000:]
    summary = json.loads(out[-1])
    produced = summary["produced"]
    lost = ("failed", "undelivered", "rejected", "dlq_failed")
    assert {k: summary[k] for k in lost} == dict.fromkeys(lost, 0)
    assert summary["delivered"] == produced > 0
    expected = {(SYMBOLS[seq % len(SYMBOLS)], seq) for seq in range(produced)}
    run_id = summary["producer_run_id"]

    # The minute of the kill (and any the producer's last records reached) once closed, the node still down.
    later = minutes(kill_minute, minute_key_from_ms(stopped_ms))
    closes_ms = minute_window_ms(later[-1])[1] + int(kafka.grace_seconds * 1000) + 500
    time.sleep(max(0.0, closes_ms / 1000 - time.time()))
    ingest(resources, later)
    everything = earlier + later

    # What Kafka holds: every delivered quote once, none other. The killed partition's first record
    # appended after the kill was appended by the new leader: that is when producing recovered there.
    messages = consume_all(bootstrap, topic, timeout_s=60)
    records = [(m.partition(), m.offset(), json.loads(m.value()), m.timestamp()) for m in messages]
    assert len(records) == produced
    assert {(r["symbol"], r["seq"]) for _, _, r, _ in records} == expected
    assert {r["producer_run_id"] for _, _, r, _ in records} == {run_id}
    assert {kind for _, _, _, (kind, _) in records} == {TIMESTAMP_LOG_APPEND_TIME}
    stamps = [ts for p, _, _, (_, ts) in records if p == partition]
    assert min(stamps) < kill_ms <= max(stamps), (
        f"partition {partition} lacks quotes before or after the kill"
    )
    produce_recovery_s = (min(ts for ts in stamps if ts >= kill_ms) - kill_ms) / 1000

    # What the raw table holds: the same quotes, once each, each in the minute the broker appended it.
    db_path = tmp_path / "warehouse.duckdb"
    rows = table_rows(db_path)
    assert len(rows) == produced
    assert len({(p, o) for p, o, *_ in rows}) == produced
    assert {(symbol, seq) for _, _, symbol, seq, *_ in rows} == expected
    assert {rid for *_, rid, _, _ in rows} == {run_id}
    assert all(minute == minute_key_from_ms(ts) for *_, minute, ts in rows)
    assert {(p, o) for p, o, *_ in rows} == {(p, o) for p, o, _, _ in records}
    ends = high_watermarks(bootstrap, topic)
    assert kafka.committed_offsets() == ends

    # The killed node comes back, catches up, and leads its partitions again; re-running every minute
    # then reads the same ranges, now partly from the node that was dead, and changes nothing.
    cluster.restart(node)
    cluster.wait_in_sync(topic)
    cluster.prefer_leaders(topic)
    assert cluster.leader_of(topic, partition) == node
    ingest(resources, everything)
    assert table_rows(db_path) == rows
    assert kafka.committed_offsets() == ends == high_watermarks(bootstrap, topic)

    print(
        f"\ncluster start {cluster.start_seconds:.1f} s; killed node {node} (leader of partition {partition}"
        f"{', coordinator of the ingest group' if coordinator else ''}) "
        f"{(kill_ms % MINUTE_MS) / 1000:.1f} s into {kill_minute}; producing recovered after "
        f"{produce_recovery_s:.1f} s; the minute(s) before the kill ingested {ingest_recovery_s:.1f} s "
        f"after it; {produced} quotes over {len(everything)} minute(s)"
    )
    assert produce_recovery_s <= RECOVERY_LIMIT_S
    assert ingest_recovery_s <= RECOVERY_LIMIT_S
