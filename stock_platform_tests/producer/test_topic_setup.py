"""The quote topic stamps records with the broker's append time wherever the platform creates it.

A minute partition is the minute the broker appended a record (LogAppendTime): the producer CLI creates
the topic that way (and switches an existing CreateTime topic, with a warning), and `stock-platform topic
ensure` does the same on its own, idempotently, saying what it did.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stock_platform import cli as platform_cli
from stock_platform.kafka_topic import APPEND_TIME, RETENTION_MS, timestamp_type
from stock_platform.producer import cli, topic_cli
from stock_platform.quotes import decode_record
from stock_platform.services.process import free_port
from stock_platform_tests.producer.kafka_helpers import consume_all

SETTING = "message.timestamp.type=LogAppendTime"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unique_topics() -> tuple[str, str]:
    name = f"quotes-{uuid.uuid4().hex[:8]}"
    return name, f"{name}-dlq"


def admin_for(kafka_broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})


def wait_for_topic(admin: AdminClient, topic: str, timeout_s: float = 15.0) -> Any:
    """The topic's metadata once the broker serves it: a topic just created may take a moment to show."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = admin.list_topics(timeout=10).topics.get(topic)
        if found is not None and found.error is None and found.partitions:
            return found
        assert time.monotonic() < deadline, f"topic {topic} did not appear: {found and found.error}"
        time.sleep(0.1)


def config_value(admin: AdminClient, topic: str, name: str) -> str:
    wait_for_topic(admin, topic)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=10)[name].value


def partition_count(admin: AdminClient, topic: str) -> int:
    return len(wait_for_topic(admin, topic).partitions)


def create_time_topic(admin: AdminClient, topic: str, partitions: int = 2) -> None:
    """A topic as Kafka creates it by default: records keep their producer's timestamp.

    It keeps records forever: the broker's retention check (every 5 min) would otherwise delete, at a
    moment no test controls, a record whose producer-stamped time is years old.
    """
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
    wait_for_topic(admin, topic)
    assert timestamp_type(admin, topic) == "CreateTime"


def produce_raw(kafka_broker, topic: str, timestamp_ms: int, value: bytes = b"{}") -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    producer.produce(topic, value, b"k", timestamp=timestamp_ms)
    assert producer.flush(30) == 0


# --------------------------------------------------------------------------------------------- producer


@pytest.mark.integration
def test_the_producer_creates_the_quote_topic_with_the_brokers_append_time(kafka_broker, capsys, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    topic, dlq = unique_topics()
    before = now_ms()

    code = cli.main(["--source", "simulated", "--symbol-count", "5", "--rate", "0", "--max-quotes", "50",
                     "--partitions", "4", "--bootstrap-servers", kafka_broker.bootstrap_servers,
                     "--topic", topic, "--dlq-topic", dlq])  # fmt: skip

    after = now_ms()
    assert code == 0, capsys.readouterr().err
    assert "switched" not in capsys.readouterr().err
    admin = admin_for(kafka_broker)
    assert timestamp_type(admin, topic) == APPEND_TIME
    assert config_value(admin, topic, "retention.ms") == str(RETENTION_MS)
    assert partition_count(admin, topic) == 4
    # The dead-letter topic exists too, with one partition; nothing places its records in minutes.
    assert partition_count(admin, dlq) == 1
    assert timestamp_type(admin, dlq) == "CreateTime"

    messages = consume_all(kafka_broker.bootstrap_servers, topic)
    assert len(messages) == 50
    for message in messages:
        kind, stamped = message.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME  # the broker's clock, not the producer's
        assert before - 1_000 <= stamped <= after + 1_000
        assert decode_record(message.value())["fetched_at"] <= stamped + 1_000  # fetched_at is data


@pytest.mark.integration
def test_the_producer_switches_a_create_time_topic_and_warns(kafka_broker, capsys, monkeypatch):
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    topic, dlq = unique_topics()
    admin = admin_for(kafka_broker)
    create_time_topic(admin, topic, partitions=2)

    code = cli.main(["--source", "simulated", "--symbol-count", "3", "--rate", "0", "--max-quotes", "10",
                     "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                     "--dlq-topic", dlq])  # fmt: skip

    err = capsys.readouterr().err
    assert code == 0, err
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [warning] = [e for e in entries if e["logger"] == "stock_platform.producer" and "switched" in e["msg"]]
    assert warning["level"] == "warning"
    assert topic in warning["msg"] and "CreateTime" in warning["msg"] and SETTING in warning["msg"]
    assert timestamp_type(admin, topic) == APPEND_TIME
    assert partition_count(admin, topic) == 2  # the topic is fixed, not recreated
    messages = consume_all(kafka_broker.bootstrap_servers, topic)
    assert len(messages) == 10
    assert {m.timestamp()[0] for m in messages} == {TIMESTAMP_LOG_APPEND_TIME}


# --------------------------------------------------------------------------------------------- topic ensure


@pytest.mark.integration
def test_topic_ensure_switches_a_create_time_topic_and_is_idempotent(kafka_broker, capsys):
    topic, dlq = unique_topics()
    admin = admin_for(kafka_broker)
    create_time_topic(admin, topic, partitions=2)
    long_ago = 1_000_000_000_000  # 2001-09-09: a producer with a wrong clock
    produce_raw(kafka_broker, topic, long_ago, b"before")
    command = ["topic", "ensure", "--topic", topic, "--bootstrap-servers", kafka_broker.bootstrap_servers,
               "--dlq-topic", dlq]  # fmt: skip

    assert platform_cli.main(command) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"topic {topic}: switched to {SETTING} (it kept the producers' timestamps; records appended before the "
        "change keep theirs)",
        f"dead-letter topic {dlq}: created",
    ]
    assert timestamp_type(admin, topic) == APPEND_TIME
    assert partition_count(admin, topic) == 2

    assert platform_cli.main(command) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"topic {topic}: already correct ({SETTING})",
        f"dead-letter topic {dlq}: already exists",
    ]
    assert timestamp_type(admin, topic) == APPEND_TIME

    # From now on the broker stamps every record, whatever clock its producer has.
    before = now_ms()
    produce_raw(kafka_broker, topic, long_ago, b"after")
    stamps = {m.value(): m.timestamp() for m in consume_all(kafka_broker.bootstrap_servers, topic)}
    assert stamps[b"before"] == (TIMESTAMP_CREATE_TIME, long_ago)  # appended before the switch: kept
    kind, stamped = stamps[b"after"]
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1_000 <= stamped <= now_ms() + 1_000


@pytest.mark.integration
def test_topic_ensure_creates_both_topics_from_the_environment(kafka_broker, capsys, monkeypatch):
    topic, dlq = unique_topics()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv("KAFKA_DLQ_TOPIC", dlq)
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "5")

    assert topic_cli.main(["ensure"]) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"topic {topic}: created (5 partition(s), {SETTING}, retention 60 days)",
        f"dead-letter topic {dlq}: created",
    ]
    admin = admin_for(kafka_broker)
    assert partition_count(admin, topic) == 5  # waits until the broker serves the new topic
    assert partition_count(admin, dlq) == 1
    assert timestamp_type(admin, topic) == APPEND_TIME
    assert config_value(admin, topic, "retention.ms") == str(RETENTION_MS)
    assert config_value(admin, dlq, "retention.ms") == str(RETENTION_MS)


def test_topic_ensure_without_kafka_exits_2_with_one_clear_line(capsys, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    address = f"127.0.0.1:{free_port()}"

    started = time.monotonic()
    code = topic_cli.main(["ensure", "--bootstrap-servers", address, "--connect-timeout", "1"])

    assert code == 2
    assert time.monotonic() - started < 10
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: Kafka is unreachable at {address}")
    assert "--bootstrap-servers" in line


def test_topic_ensure_refuses_a_bad_partition_count(capsys, monkeypatch):
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "six")
    assert topic_cli.main(["ensure", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: KAFKA_TOPIC_PARTITIONS must be a whole number, got 'six'"
    )
    # The settings are read whole, so a bad variable is reported even when an option would override it.
    assert topic_cli.main(["ensure", "--partitions", "3", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "KAFKA_TOPIC_PARTITIONS must be a whole number" in capsys.readouterr().err
    monkeypatch.delenv("KAFKA_TOPIC_PARTITIONS")
    assert topic_cli.main(["ensure", "--partitions", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_topic_is_a_registered_subcommand():
    assert platform_cli.SUBCOMMANDS["topic"][0] == "stock_platform.producer.topic_cli"


@pytest.mark.integration
def test_stock_platform_run_ensures_the_topics_before_starting_anything(kafka_broker, capsys):
    from stock_platform.runner import ensure_quote_topics

    topic, dlq = unique_topics()
    admin = admin_for(kafka_broker)
    create_time_topic(admin, topic)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": dlq,
    }

    assert ensure_quote_topics(env)

    assert capsys.readouterr().out.splitlines()[0].startswith(f"topic {topic}: switched to {SETTING}")
    assert timestamp_type(admin, topic) == APPEND_TIME
    assert partition_count(admin, dlq) == 1
