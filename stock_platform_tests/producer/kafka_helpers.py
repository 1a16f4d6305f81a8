"""Read back exactly what a test's producer wrote: every message up to each partition's high watermark."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


def consume_all(bootstrap_servers: str, topic: str, timeout_s: float = 15.0) -> list[Message]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers, "group.id": f"test-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        assert metadata.error is None, f"topic {topic} is missing: {metadata.error}"
        wanted: dict[int, int] = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                wanted[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while wanted:
            assert time.monotonic() < deadline, f"timed out reading {topic}; still waiting on {wanted}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
            if msg.offset() + 1 >= wanted.get(msg.partition(), 0):
                wanted.pop(msg.partition(), None)
        return messages
    finally:
        consumer.close()


def values(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in messages]
