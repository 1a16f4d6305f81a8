"""An in-memory Kafka topic and ingest group behind KafkaResource, for the fast Dagster-level tests.

``FakeKafkaResource`` subclasses the real resource and replaces only its I/O primitives (metadata,
watermarks, offsets_for_times, committed offsets, commits, reads). Everything the assets and the sensor
decide (when a minute is closed, its offset ranges, the floor of the window's first minute, which offsets
to commit, refusing gaps, lag, the tick's snapshot) runs the production code unchanged, so a fast test
of a rule tests the rule the broker-backed tests and production use.

The resource finds its cluster by ``bootstrap_servers`` (``memory://…``), as a client finds a broker by
address: Dagster may copy a resource, and a copy must still reach the same log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from stock_platform.kafka_topic import TopicMisconfigured, fix_hint
from stock_platform.resources.kafka import KafkaResource, KafkaUnavailable, OffsetRange
from stock_platform_tests.kafka_topics import record_key

CLUSTERS: dict[str, FakeCluster] = {}
LOG_APPEND_TIME = 2  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME


@dataclass(frozen=True)
class FakeMessage:
    """The part of confluent_kafka.Message that ingestion reads."""

    _topic: str
    _partition: int
    _offset: int
    _timestamp_ms: int
    _key: bytes | None
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return LOG_APPEND_TIME, self._timestamp_ms

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class FakeCluster:
    """One topic with its partitions' logs, and the ingest group's committed offsets."""

    topic: str = "stock-quotes"
    partitions: int = 2
    append_time: bool = True
    reachable: bool = True
    address: str = field(default_factory=lambda: f"memory://{uuid.uuid4().hex[:12]}")
    logs: dict[int, list[FakeMessage]] = field(init=False)
    low: dict[int, int] = field(init=False)
    committed: dict[int, int] = field(default_factory=dict)
    commits: list[dict[int, int]] = field(default_factory=list)  # every commit, in order
    # An invariant checked before each commit; what it asserts wrongly is kept here, and the commit refused.
    before_commit: Callable[[Mapping[int, int]], None] | None = None
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = {p: [] for p in range(self.partitions)}
        self.low = dict.fromkeys(range(self.partitions), 0)
        CLUSTERS[self.address] = self

    def append(self, partition: int, timestamp_ms: int, value: bytes, key: bytes | None = None) -> int:
        """Append one record as the broker would stamp it (LogAppendTime: never earlier than the last),
        keyed by its symbol unless ``key`` is given, as the producer keys it."""
        log = self.logs[partition]
        if log and timestamp_ms < log[-1].timestamp()[1]:
            raise ValueError(
                f"partition {partition}: append time {timestamp_ms} is before the last record's "
                f"{log[-1].timestamp()[1]}; a LogAppendTime topic only moves forward"
            )
        key = record_key(value) if key is None else key
        log.append(FakeMessage(self.topic, partition, len(log), timestamp_ms, key, value))
        return len(log) - 1

    def high(self) -> dict[int, int]:
        return {p: len(log) for p, log in self.logs.items()}

    def resource(self, **overrides: Any) -> FakeKafkaResource:
        settings: dict[str, Any] = {
            "bootstrap_servers": self.address,
            "topic": self.topic,
            "ingest_group": "ingest",
            "grace_seconds": 10.0,
        }
        return FakeKafkaResource(**{**settings, **overrides})


class _Connection:
    """Stands in for a confluent_kafka.Consumer, which the resource only opens and closes itself."""

    def close(self) -> None:
        pass


class FakeKafkaResource(KafkaResource):
    """KafkaResource over a FakeCluster: the same rules, an in-memory log instead of a broker."""

    def _cluster(self) -> FakeCluster:
        cluster = CLUSTERS.get(self.bootstrap_servers)
        if cluster is None or not cluster.reachable:
            raise KafkaUnavailable(f"Kafka at {self.bootstrap_servers} did not answer: transport failure")
        return cluster

    def _consumer(self, **overrides: Any) -> Any:
        self._cluster()
        return _Connection()

    def partitions(self, consumer: Any) -> list[int]:
        cluster = self._cluster()
        if cluster.topic != self.topic:
            raise KafkaUnavailable(
                f"topic {self.topic!r} does not exist on {self.bootstrap_servers} yet; the producer creates "
                "it (`stock-platform produce`), or check KAFKA_TOPIC"
            )
        return sorted(cluster.logs)

    def _watermarks(self, consumer: Any, partitions: list[int]) -> dict[int, tuple[int, int]]:
        cluster = self._cluster()
        return {p: (cluster.low[p], len(cluster.logs[p])) for p in partitions}

    def _offsets_at(self, consumer: Any, partitions: list[int], timestamp_ms: int) -> dict[int, int]:
        """offsets_for_times: the first offset stamped at or after the time, else -1 (OFFSET_END)."""
        cluster = self._cluster()
        return {
            p: next(
                (m.offset() for m in cluster.logs[p][cluster.low[p] :] if m.timestamp()[1] >= timestamp_ms),
                -1,
            )
            for p in partitions
        }

    def require_append_time(self) -> None:
        if self.require_log_append_time and not self._cluster().append_time:
            raise TopicMisconfigured(
                f"topic {self.topic!r} stamps records with their producers' clocks; "
                f"{fix_hint(self.topic, self.bootstrap_servers)}"
            )

    def committed_offsets(self, consumer: Any = None) -> dict[int, int | None]:
        cluster = self._cluster()
        return {p: cluster.committed.get(p) for p in self.partitions(consumer)}

    def _commit(self, consumer: Any, offsets: Mapping[int, int]) -> None:
        cluster = self._cluster()
        if cluster.before_commit is not None:
            try:
                cluster.before_commit(offsets)
            except AssertionError as exc:
                cluster.violations.append(str(exc))
                # Not retried: the test reads the violation, not three retries of it.
                raise dg.Failure(description=f"commit refused: {exc}", allow_retries=False) from exc
        cluster.committed.update(offsets)
        cluster.commits.append(dict(offsets))

    def _first_timestamps(self, consumer: Any, positions: Mapping[int, int]) -> dict[int, int]:
        logs = self._cluster().logs
        return {p: logs[p][o].timestamp()[1] for p, o in positions.items() if o < len(logs[p])}

    def read(self, ranges: tuple[OffsetRange, ...]) -> Iterator[list[Any]]:
        logs = self._cluster().logs
        for r in ranges:
            for start in range(r.start, r.end, self.read_batch_size):
                yield logs[r.partition][start : min(start + self.read_batch_size, r.end)]
