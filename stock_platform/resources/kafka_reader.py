"""Consume exact offset ranges: the read loop, free of Dagster so parallel read workers start fast."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

# librdkafka settings of a range read. Once its local queue holds queued.min.messages (100,000) the
# client postpones the next fetch by fetch.queue.backoff.ms (default 1 s), so a reader that drains the
# queue quickly keeps waiting on the network: the benchmark's plain consumer loop reads ~150,000
# quotes/s with the default and 600,000-800,000 with 10 ms. Memory stays bounded by
# queued.max.messages.kbytes whatever the backoff. A queue of 10,000 messages per partition instead of
# 100,000 keeps a reader's prefetch of small records ~50 MiB smaller (a catch-up runs two group readers
# at once) at ~5 % of the plain read's speed, which is several times what validation keeps up with:
# 1.44 M records over 6 partitions read in 1.19-1.25 s at peak PSS 149-152 MiB, 1.28 s at 100 MiB.
READ_TUNING = {
    "queued.max.messages.kbytes": 65536,
    "queued.min.messages": 10_000,
    "fetch.queue.backoff.ms": 10,
}


class ReadStalled(RuntimeError):
    """No progress for the stall timeout while ranges were still unfinished."""


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [start, end) of one Kafka partition: ``end`` is exclusive, as Kafka's committed offsets."""

    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.start


def split_ranges(ranges: tuple[OffsetRange, ...], parts: int) -> list[tuple[OffsetRange, ...]]:
    """Cut ranges into ``parts`` groups of about equal record counts (a partition may be cut in two).

    Each record stays in exactly one group, so workers reading the groups read the ranges once.
    """
    total = sum(r.count for r in ranges)
    if parts <= 1 or total == 0:
        return [ranges]
    share = -(-total // parts)  # ceiling division
    groups: list[list[OffsetRange]] = [[]]
    room = share
    for r in ranges:
        start = r.start
        while start < r.end:
            if room == 0:
                groups.append([])
                room = share
            end = min(r.end, start + room)
            groups[-1].append(OffsetRange(r.partition, start, end))
            room -= end - start
            start = end
    return [tuple(g) for g in groups if g]


def read_ranges(
    config: Mapping[str, Any],
    topic: str,
    ranges: tuple[OffsetRange, ...],
    batch_size: int = 10_000,
    stall_timeout: float = 10.0,
) -> Iterator[list[Message]]:
    """Yield the messages of ``ranges`` in chunks, each message exactly once, then stop.

    Messages arrive in offset order per partition, interleaved across partitions. A read that makes
    no progress for ``stall_timeout`` seconds raises ReadStalled rather than waiting forever on a range
    that can no longer be completed.
    """
    pending = {r.partition: r for r in ranges if r.count > 0}
    if not pending:
        return
    consumer = Consumer({**config, **READ_TUNING})
    try:
        consumer.assign([TopicPartition(topic, p, r.start) for p, r in pending.items()])
        last_progress = time.monotonic()
        next_offset = {p: r.start for p, r in pending.items()}
        while pending:
            # Asking for no more than what is left lets consume() return as soon as the range is in,
            # instead of waiting out its timeout for a batch that cannot fill.
            left = sum(pending[p].end - next_offset[p] for p in pending)
            messages = consumer.consume(max(1, min(batch_size, left)), timeout=0.5)
            chunk = []
            finished = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                p = cast(int, message.partition())
                r = pending.get(p)
                offset = cast(int, message.offset())
                if r is None or offset >= r.end:
                    continue  # prefetched past the range, or a partition already done
                chunk.append(message)
                next_offset[p] = offset + 1
                if offset >= r.end - 1:
                    finished.append(p)
                    del pending[p]
            if chunk:
                last_progress = time.monotonic()
                yield chunk
            if finished:
                consumer.incremental_unassign([TopicPartition(topic, p) for p in finished])
            if not messages and pending:
                # Offsets can have gaps (transaction markers, compaction): a range may end on an
                # offset that is never delivered, so also stop once the position passes the end.
                for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                    if cast(int, tp.offset) >= pending[cast(int, tp.partition)].end:
                        del pending[cast(int, tp.partition)]
                if pending and time.monotonic() - last_progress > stall_timeout:
                    raise ReadStalled(
                        f"reading {topic} stalled for {stall_timeout:g} s with partitions "
                        f"{sorted(pending)} unfinished (ranges {[pending[p] for p in sorted(pending)]})"
                    )
    finally:
        consumer.close()
