"""The health strip's Kafka figures against a real broker: the ingest group's lag and the dead letters of
the last hour, counted exactly."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stock_platform.dashboard.health import kafka_figures
from stock_platform.settings import load_settings
from stock_platform_tests.kafka_topics import create_topic

pytestmark = pytest.mark.integration


def test_lag_and_dead_letters_of_the_last_hour_are_counted_exactly(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    quotes = create_topic(servers, "dash-quotes", partitions=2)
    dead = create_topic(servers, "dash-dlq", partitions=1)
    group = f"dash-ingest-{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": servers})
    for index in range(7):
        producer.produce(quotes, b"{}", key=b"A", partition=index % 2)
    # Dead letters: three within the hour, two older (the DLQ topic keeps its producers' timestamps).
    for age_s in (7200, 3700, 1800, 60, 1):
        producer.produce(dead, b"{}", timestamp=now_ms - age_s * 1000)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(quotes, 0, 2)], asynchronous=False)  # partition 0: 4 - 2 behind
    consumer.close()

    env = {"KAFKA_BOOTSTRAP_SERVERS": servers, "KAFKA_TOPIC": quotes, "KAFKA_DLQ_TOPIC": dead,
           "KAFKA_INGEST_GROUP": group}  # fmt: skip
    now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).replace(tzinfo=None)
    found = kafka_figures(load_settings(env), now)
    assert found.problems == {}
    assert found.consumer_lag == 2 + 3  # partition 1 was never committed: all 3 of its records
    assert found.dead_letters_last_hour == 3


def test_a_broker_that_does_not_answer_is_reported_not_raised():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    started = time.monotonic()
    found = kafka_figures(load_settings(env), dt.datetime(2026, 12, 1))
    assert found.consumer_lag is None and found.dead_letters_last_hour is None
    assert "did not answer" in found.problems["consumer_lag"]
    assert time.monotonic() - started < 15
