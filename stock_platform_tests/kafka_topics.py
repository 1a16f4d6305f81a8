"""Topics for tests, on the session's broker.

Most ingestion tests place records in chosen past minutes, which only a topic that keeps the producer's
timestamp (CreateTime) allows; they pair such a topic with ``KafkaResource(require_log_append_time=False)``.
Tests of arrival-time minutes, and every test of the whole platform, use the production setting
(LogAppendTime, ``stock_platform.kafka_topic.QUOTE_TOPIC_CONFIG``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stock_platform.kafka_topic import QUOTE_TOPIC_CONFIG

# Keyword arguments of a KafkaResource reading a CreateTime topic whose records a test placed in the past.
PAST_MINUTES = {"require_log_append_time": False}


def ordered_producer(bootstrap: str, **config: Any) -> Producer:
    """A producer whose records land in each partition in the order they were produced.

    Tests derive offsets and minute ranges from that order (by_offset below). A plain producer keeps
    several requests in flight and retries a failed one after its successors were appended: a fresh
    topic's first request sometimes fails while leadership settles, and its records then landed after
    later ones (CI's flake of test_arrival_minutes, stop 28: about one run in a hundred). One request in
    flight keeps the order; idempotence would too, at ~0.5 s more per producer here.
    """
    return Producer({"bootstrap.servers": bootstrap, "max.in.flight.requests.per.connection": 1, **config})


def create_topic(
    bootstrap: str, prefix: str = "quotes", partitions: int = 2, append_time: bool = False
) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the future resolves
    config = dict(QUOTE_TOPIC_CONFIG) if append_time else {}
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    return name


def record_key(value: bytes | None) -> bytes:
    """The key the producer gives a record: its symbol (b"k" for a value that has none)."""
    try:
        symbol = json.loads(value)["symbol"]  # type: ignore[arg-type]
    except Exception:
        return b"k"
    return symbol.encode() if isinstance(symbol, str) else b"k"


class _Placed(Protocol):
    partition: int


M = TypeVar("M", bound=_Placed)


def by_offset(messages: Sequence[M]) -> dict[tuple[int, int], M]:
    """Messages produced in this order into a fresh topic, by (Kafka partition, offset): offsets count
    up from 0 per partition."""
    next_offset: dict[int, int] = {}
    placed: dict[tuple[int, int], Any] = {}
    for m in messages:
        offset = next_offset.get(m.partition, 0)
        next_offset[m.partition] = offset + 1
        placed[(m.partition, offset)] = m
    return placed
