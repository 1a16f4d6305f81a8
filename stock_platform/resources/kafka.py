"""Kafka access for ingestion: a minute's offset ranges, reading exactly those ranges, offsets and lag.

A minute is read by offsets, never by a consumer group's position: ``offsets_for_times`` maps the
window's start and end to offsets on each Kafka partition and the records in between are consumed with
``assign()``. Every record therefore belongs to exactly one minute's range (the range boundaries tile
each partition), and re-reading the minute reads the same records while Kafka keeps them.

The ingest consumer group never subscribes; it only holds committed offsets (the platform's position),
which ingestion moves forward after a minute is durable and the lag sensor compares with the high
watermark.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import dagster as dg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import Field

from stock_platform.kafka_topic import TopicMisconfigured, require_append_time
from stock_platform.partitions import minute_window_ms
from stock_platform.resources.kafka_reader import OffsetRange, ReadStalled, read_ranges

__all__ = ["KafkaResource", "MinuteBatch", "OffsetRange", "PartitionLag", "TopicMisconfigured"]

# A catch-up run looks up one timestamp per minute boundary (241 for 240 minutes). The broker answers a
# connection's requests one at a time, ~7 ms each for 6 partitions here, so they are spread over a few
# connections: 241 lookups took 1.7 s on one connection, 1.0 s on two and 0.9 s on four.
LOOKUP_CONNECTIONS = 4
# The resource's own consumers, which read one record per partition at most (the lag sensor's look at the
# first pending record, every tick): by default librdkafka fills its local queue up to 100,000 messages
# per partition as soon as a partition is assigned, one fetch of up to 1 MB per partition whatever is
# consumed. With 1 it stops after the first fetch: 0.11 s of CPU per look instead of 0.18 s on 1 MB LZ4
# batches, and the code server spent ~8 s of a 24 h catch-up in these looks (docs/benchmarks.md). Smaller
# fetch sizes (max.partition.fetch.bytes, queued.max.messages.kbytes) left partitions unread within the
# timeout here. Range reads do not use it: they build their consumers from consumer_config().
# A partition whose queue is over that threshold is not fetched again for fetch.queue.backoff.ms (1,000
# by default), and a partition that missed the first fetch waited it out too: about half of the looks
# took 1.07 s instead of 0.07 s (a /tmp loop on the real broker, 6 partitions with lag), and each such
# look delayed a minute's run request by a second (close -> gold p50 2.2 -> 3.6 s, docs/benchmarks.md).
PEEK_TUNING = {"queued.min.messages": 1, "fetch.queue.backoff.ms": 10}
# librdkafka's "no offset" sentinels: offsets_for_times answers OFFSET_END (-1) when no record is at
# or after the timestamp; committed() answers OFFSET_INVALID (-1001) for a partition never committed.
OFFSET_END = -1
_COORDINATOR_ERRORS = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._WAIT_COORD,
}
T = TypeVar("T")


class KafkaUnavailable(RuntimeError):
    """The broker or the topic cannot be reached; the message says which and where."""


class RecordsDeleted(KafkaUnavailable):
    """Retention deleted records of the minute; retrying cannot bring them back."""


class MinuteNotClosed(RuntimeError):
    """The minute may still receive records; ``str(exc)`` says why and when it closes."""


@dataclass(frozen=True)
class MinuteBatch:
    """A minute's records as offset ranges, one per Kafka partition: the manifest a raw object is read from."""

    topic: str
    partition_key: str
    ranges: tuple[OffsetRange, ...]
    closed_by: str  # "records" (each partition has a record past the end) or "grace"

    @property
    def record_count(self) -> int:
        return sum(r.count for r in self.ranges)

    @property
    def ends(self) -> dict[int, int]:
        return {r.partition: r.end for r in self.ranges}

    def ranges_text(self) -> str:
        """``partition:start-end`` per partition, the form used in metadata and object metadata."""
        return ",".join(f"{r.partition}:{r.start}-{r.end}" for r in self.ranges)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "topic": self.topic,
                "partition_key": self.partition_key,
                "closed_by": self.closed_by,
                "ranges": [[r.partition, r.start, r.end] for r in self.ranges],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MinuteBatch:
        doc = json.loads(data)
        return cls(
            topic=doc["topic"],
            partition_key=doc["partition_key"],
            closed_by=doc["closed_by"],
            ranges=tuple(OffsetRange(p, s, e) for p, s, e in doc["ranges"]),
        )


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    low: int
    high: int
    committed: int | None

    @property
    def lag(self) -> int:
        return lag_of(self.low, self.high, self.committed)

    @property
    def position(self) -> int:
        """The first offset not yet ingested (retention may have moved the low watermark past it)."""
        return max(self.committed or self.low, self.low)


def lag_of(low: int, high: int, committed: int | None) -> int:
    """Records not yet ingested: high watermark minus committed, or everything Kafka holds if none is."""
    if committed is None or committed < 0:
        return max(high - low, 0)
    # A committed offset below the low watermark means retention deleted records never ingested; those
    # are gone, so they are not lag that ingestion could still catch up on.
    return max(high - max(committed, low), 0)


def closed_reason(now_ms: int, end_ms: int, grace_ms: int, all_partitions_past_end: bool) -> str | None:
    """Why a minute counts as closed ("records" or "grace"), or None while it may still get records.

    Before its end a minute is open whatever Kafka holds (a producer with a fast clock must not close it).
    After the end it is closed once every partition has a record past the end, since Kafka appends in
    order per partition; otherwise after the grace period, which covers idle partitions and slow
    producers.
    """
    if now_ms < end_ms:
        return None
    if all_partitions_past_end:
        return "records"
    if now_ms >= end_ms + grace_ms:
        return "grace"
    return None


def offset_ranges(
    partitions: list[int],
    highs: Mapping[int, int],
    starts: Mapping[int, int],
    ends: Mapping[int, int],
) -> tuple[OffsetRange, ...]:
    """Turn offsets_for_times answers into ranges.

    ``highs`` must be read *before* the timestamp lookups: an OFFSET_END answer then means every record
    below that high watermark is earlier than the timestamp, so the range may safely end there without
    taking in a record of the next minute that arrived in between.
    """
    ranges = []
    for p in partitions:
        end = ends[p] if ends[p] >= 0 else highs[p]
        start = starts[p] if starts[p] >= 0 else highs[p]
        ranges.append(OffsetRange(p, min(start, end), end))
    return tuple(ranges)


class EarlierRecordsPending(RuntimeError):
    """Committing would skip records that no run has ingested yet; ``str(exc)`` names them."""


def gaps_before(positions: Mapping[int, int], starts: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [position, start) that lie between the group's position and a batch.

    A batch may be committed only when nothing lies before it: moving the group past such a gap would
    mark records as ingested that no run loaded (a failed earlier minute, say). A group that never
    committed stands at the low watermark (``KafkaResource.positions``), as the planner sees it: its
    first commit too may not skip the records before the batch.
    """
    return {
        p: (current, start) for p, start in starts.items() if (current := positions.get(p, start)) < start
    }


def advancing_commits(committed: Mapping[int, int | None], targets: Mapping[int, int]) -> dict[int, int]:
    """The offsets to commit: only partitions whose target is ahead of what is committed (never rewind)."""
    plan = {}
    for p, target in targets.items():
        current = committed.get(p)
        if current is None or current < 0 or target > current:
            plan[p] = target
    return plan


@dataclass(frozen=True)
class TopicSnapshot:
    """One look at the topic and the ingest group, for the lag sensor."""

    lags: tuple[PartitionLag, ...]
    first_pending_ms: int | None  # Kafka timestamp of the oldest record not yet ingested
    current_minute_has_records: bool  # every partition has a record in the minute now running
    records_recently: bool  # some partition has a record newer than the "recent" horizon

    @property
    def total_lag(self) -> int:
        return sum(lag.lag for lag in self.lags)


class KafkaResource(dg.ConfigurableResource):
    """The quotes topic and the ingest consumer group on one Kafka cluster.

    Only a few methods talk to the broker: ``_consumer``, ``partitions``, ``_watermarks``, ``_offsets_at``,
    ``require_append_time``, ``committed_offsets``, ``_commit``, ``_first_timestamps`` and ``read``. The
    rest decides from their answers (with the pure functions above), so the fast tests' in-memory topic
    (stock_platform_tests/fake_kafka.py) replaces exactly these and runs the same rules; keep new broker
    calls inside them.
    """

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="host:port[,host:port...]")
    topic: str = Field(default="stock-quotes", description="Topic of quote records.")
    ingest_group: str = Field(
        default="stock-platform-ingest", description="Consumer group holding the ingested position."
    )
    grace_seconds: float = Field(
        default=2.0,
        description="After a minute's end, how long an idle partition may still deliver its records.",
    )
    timeout_seconds: float = Field(default=10.0, description="Per Kafka request, and per read stall.")
    read_batch_size: int = Field(default=10_000, description="Messages per consume() call.")
    read_workers: int = Field(
        default=2,
        description="Processes reading a large minute in parallel (1 = always in the run's process).",
    )
    parallel_read_threshold: int = Field(
        default=200_000, description="Records from which a minute is read by read_workers processes."
    )
    require_log_append_time: bool = Field(
        default=True,
        description=(
            "Refuse a topic whose records carry their producers' timestamps (CreateTime). Only tests that "
            "place records in chosen past minutes, which the broker's append time cannot do, turn it off."
        ),
    )

    def _consumer(self, **overrides: Any) -> Consumer:
        return Consumer({**self.consumer_config(), **PEEK_TUNING, **overrides})

    @contextmanager
    def consumer(self, **overrides: Any) -> Iterator[Consumer]:
        consumer = self._consumer(**overrides)
        try:
            yield consumer
        finally:
            consumer.close()

    def partitions(self, consumer: Consumer) -> list[int]:
        try:
            metadata = consumer.list_topics(self.topic, timeout=self.timeout_seconds)
        except KafkaException as exc:
            raise KafkaUnavailable(f"Kafka at {self.bootstrap_servers} did not answer: {exc}") from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or (
            topic.error is not None and topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise KafkaUnavailable(
                f"topic {self.topic!r} does not exist on {self.bootstrap_servers} yet; the producer creates "
                "it (`stock-platform produce`), or check KAFKA_TOPIC"
            )
        if topic.error is not None or not topic.partitions:
            reason = topic.error if topic.error is not None else "no partitions"
            raise KafkaUnavailable(f"topic {self.topic!r} on {self.bootstrap_servers}: {reason}")
        return sorted(topic.partitions)

    def _watermarks(self, consumer: Consumer, partitions: list[int]) -> dict[int, tuple[int, int]]:
        # A partition whose leader just died answers with an error until a new leader is elected
        # (test_broker_failover.py): say so as the other lookups do, and the run's retry reads it again.
        try:
            return {
                p: consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout_seconds, cached=False
                )
                for p in partitions
            }
        except KafkaException as exc:
            raise KafkaUnavailable(f"watermarks of {self.topic} on {self.bootstrap_servers}: {exc}") from exc

    def _offsets_at(self, consumer: Consumer, partitions: list[int], timestamp_ms: int) -> dict[int, int]:
        try:
            answers = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, timestamp_ms) for p in partitions],
                timeout=self.timeout_seconds,
            )
        except KafkaException as exc:
            raise KafkaUnavailable(f"offsets_for_times on {self.topic}: {exc}") from exc
        offsets = {}
        for tp in answers:
            if tp.error is not None:
                raise KafkaUnavailable(f"offsets_for_times on {self.topic}[{tp.partition}]: {tp.error}")
            offsets[tp.partition] = tp.offset
        return offsets

    def _offsets_at_each(
        self, consumer: Consumer, partitions: list[int], timestamps: Sequence[int]
    ) -> dict[int, dict[int, int]]:
        """``_offsets_at`` for each timestamp; many of them over LOOKUP_CONNECTIONS connections at once."""
        if len(timestamps) < LOOKUP_CONNECTIONS * 4:
            return {at: self._offsets_at(consumer, partitions, at) for at in timestamps}
        with ExitStack() as stack:
            consumers = [consumer] + [
                stack.enter_context(self.consumer()) for _ in range(LOOKUP_CONNECTIONS - 1)
            ]
            shares = [timestamps[i :: len(consumers)] for i in range(len(consumers))]
            with ThreadPoolExecutor(len(consumers)) as pool:
                answers = pool.map(
                    lambda c, share: {at: self._offsets_at(c, partitions, at) for at in share},
                    consumers,
                    shares,
                )
                return {at: offsets for answer in answers for at, offsets in answer.items()}

    def require_append_time(self) -> None:
        """Raise TopicMisconfigured (naming the fix) unless the topic stamps records with append time.

        Minutes are minutes of arrival only on such a topic: there, the offset ranges of consecutive
        minutes tile each Kafka partition whatever the producers' clocks say.
        """
        if not self.require_log_append_time:
            return
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "socket.timeout.ms": int(self.timeout_seconds * 1000),
                "log_level": 3,
            }
        )
        try:
            require_append_time(admin, self.topic, self.bootstrap_servers)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"could not read the configuration of topic {self.topic!r} on {self.bootstrap_servers}: {exc}"
            ) from exc

    def positions(self, consumer: Consumer) -> dict[int, int]:
        """Per partition, the first offset not yet ingested: the committed offset, else the low watermark."""
        partitions = self.partitions(consumer)
        return {lag.partition: lag.position for lag in self._lags(consumer, partitions)}

    def minute_batch(
        self,
        partition_key: str,
        now_ms: int | None = None,
        consumer: Consumer | None = None,
        floor: Mapping[int, int] | None = None,
    ) -> MinuteBatch:
        """The minute's offset range on each partition; raises MinuteNotClosed while it may still grow.

        Pass ``consumer`` to share one connection across calls. ``floor`` lowers the ranges' starts to
        those offsets: the first minute of the partitions window takes in the records appended before the
        window that were never ingested, which no minute could hold otherwise.
        """
        floors = {partition_key: floor} if floor else None
        return self.minute_batches([partition_key], now_ms, consumer, floors)[0]

    def minute_batches(
        self,
        partition_keys: Sequence[str],
        now_ms: int | None = None,
        consumer: Consumer | None = None,
        floors: Mapping[str, Mapping[int, int]] | None = None,
    ) -> list[MinuteBatch]:
        """minute_batch for several minutes from one look at the topic: its partitions and watermarks
        once, and one offsets_for_times per minute boundary (a minute's end is the next one's start), so
        a catch-up run of hundreds of minutes asks the broker a few hundred questions, not thousands.
        ``floors`` maps a minute to its floor (minute_batch)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        windows = [(key, *minute_window_ms(key)) for key in partition_keys]
        for key, _, end_ms in windows:
            if now_ms < end_ms:
                raise MinuteNotClosed(
                    f"minute {key} is still open: it ends in {(end_ms - now_ms) / 1000:.1f} s"
                )
        if consumer is None:
            with self.consumer() as owned:
                return self.minute_batches(partition_keys, now_ms, owned, floors)
        partitions = self.partitions(consumer)
        # Read before the timestamp lookups (offset_ranges says why).
        watermarks = self._watermarks(consumer, partitions)
        boundaries = sorted({at for _, start_ms, end_ms in windows for at in (start_ms, end_ms)})
        offsets_at = self._offsets_at_each(consumer, partitions, boundaries)
        return [
            self._minute_batch_from(
                key, now_ms, end_ms, partitions, watermarks, offsets_at[start_ms], offsets_at[end_ms],
                (floors or {}).get(key),
            )
            for key, start_ms, end_ms in windows
        ]  # fmt: skip

    def _minute_batch_from(
        self,
        partition_key: str,
        now_ms: int,
        end_ms: int,
        partitions: list[int],
        watermarks: Mapping[int, tuple[int, int]],
        starts: Mapping[int, int],
        ends: Mapping[int, int],
        floor: Mapping[int, int] | None,
    ) -> MinuteBatch:
        idle = [p for p in partitions if ends[p] < 0]
        reason = closed_reason(now_ms, end_ms, int(self.grace_seconds * 1000), not idle)
        if reason is None:
            closes_in = (end_ms + self.grace_seconds * 1000 - now_ms) / 1000
            raise MinuteNotClosed(
                f"minute {partition_key} is not closed yet: partition(s) {idle} of {self.topic!r} have no "
                f"record past its end and the {self.grace_seconds:g} s grace period ends in {closes_in:.1f} s"
            )
        highs = {p: high for p, (_, high) in watermarks.items()}
        ranges = offset_ranges(partitions, highs, starts, ends)
        if floor:
            ranges = tuple(
                OffsetRange(r.partition, min(r.start, max(floor.get(r.partition, r.start), 0)), r.end)
                for r in ranges
            )
        for r in ranges:
            low = watermarks[r.partition][0]
            if r.count and r.start < low:
                raise RecordsDeleted(
                    f"{self.topic}[{r.partition}] offsets {r.start}-{low} of minute {partition_key} were "
                    "deleted by retention; the minute can no longer be read in full"
                )
        return MinuteBatch(self.topic, partition_key, ranges, reason)

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings of the ingestion's consumers (also handed to parallel read workers)."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.ingest_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A range whose records retention deleted must fail loudly, not silently jump elsewhere.
            "auto.offset.reset": "error",
            "enable.partition.eof": False,
            "socket.timeout.ms": int(self.timeout_seconds * 1000),
            # An unreachable broker otherwise logs a line per retry to stderr on every call.
            "log_level": 3,
        }

    def read(self, ranges: tuple[OffsetRange, ...]) -> Iterator[list[Message]]:
        """Yield the messages of ``ranges`` in chunks, each message exactly once, then stop."""
        try:
            yield from read_ranges(
                self.consumer_config(), self.topic, ranges, self.read_batch_size, self.timeout_seconds
            )
        except ReadStalled as exc:
            raise KafkaUnavailable(str(exc)) from exc

    def committed_offsets(self, consumer: Consumer | None = None) -> dict[int, int | None]:
        """The ingest group's committed offset per partition (None where it never committed)."""
        if consumer is None:
            with self.consumer() as owned:
                return self.committed_offsets(owned)
        partitions = self.partitions(consumer)
        answers = self._coordinated(
            lambda: consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=self.timeout_seconds
            )
        )
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in answers}

    def _coordinated(self, call: Callable[[], T]) -> T:
        """Run a group-coordinator request, retrying while the coordinator is moving or loading.

        A fresh cluster creates its offsets topic on the first group request, and a coordinator can
        move between brokers; both answer with retriable errors for a few seconds.
        """
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                return call()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and error.code() in _COORDINATOR_ERRORS
                if not retriable or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def commit_ends(self, ends: Mapping[int, int], starts: Mapping[int, int] | None = None) -> dict[int, int]:
        """Move the ingest group to ``ends`` where that is forward; return what was committed.

        With ``starts`` (the batch's first offsets), refuse with EarlierRecordsPending when the group's
        position is behind them: the batch is durable, but records before it are not.

        Reading then committing is not atomic in Kafka, so concurrent runs on this host are serialized by
        a file lock, and what is read back after the commit is repaired if another writer rewound it.
        """
        with _host_lock(f"{self.bootstrap_servers}/{self.ingest_group}/{self.topic}"), self.consumer() as c:
            before = self.committed_offsets(c)
            gaps = gaps_before(self.positions(c) if starts else {}, starts or {})
            if gaps:
                listed = ", ".join(f"partition {p} offsets {a}-{b}" for p, (a, b) in sorted(gaps.items()))
                raise EarlierRecordsPending(
                    f"records before this batch are not ingested yet ({listed}) on {self.topic!r}; the "
                    f"group {self.ingest_group!r} stays where it is until the earlier minutes are loaded"
                )
            plan = advancing_commits(before, ends)
            if plan:
                self._commit(c, plan)
                after = self.committed_offsets(c)
                repair = {p: o for p, o in plan.items() if (after.get(p) or 0) < o}
                if repair:
                    self._commit(c, repair)
            return plan

    def _commit(self, consumer: Consumer, offsets: Mapping[int, int]) -> None:
        answers = self._coordinated(
            lambda: consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())],
                asynchronous=False,
            )
        )
        failed = [tp for tp in answers or [] if tp.error is not None]
        if failed:
            raise KafkaException(failed[0].error)

    def consumer_lag(self) -> list[PartitionLag]:
        """Lag of the ingest group per partition: high watermark - committed (high - low if none)."""
        with self.consumer() as consumer:
            return self._lags(consumer, self.partitions(consumer))

    def _lags(self, consumer: Consumer, partitions: list[int]) -> list[PartitionLag]:
        watermarks = self._watermarks(consumer, partitions)
        committed = self.committed_offsets(consumer)
        return [PartitionLag(p, *watermarks[p], committed.get(p)) for p in partitions]

    def _first_pending(self, consumer: Consumer, lags: list[PartitionLag]) -> dict[int, int]:
        return self._first_timestamps(consumer, {lag.partition: lag.position for lag in lags if lag.lag > 0})

    def snapshot(self, now_ms: int, recent_ms: int) -> TopicSnapshot:
        """What the lag sensor needs from one tick, read with one consumer (a handful of requests)."""
        minute_start = now_ms - now_ms % 60_000
        with self.consumer() as consumer:
            partitions = self.partitions(consumer)
            lags = self._lags(consumer, partitions)
            pending = self._first_pending(consumer, lags)
            in_current = self._offsets_at(consumer, partitions, minute_start)
            recent = self._offsets_at(consumer, partitions, now_ms - recent_ms)
        return TopicSnapshot(
            lags=tuple(lags),
            first_pending_ms=min(pending.values()) if pending else None,
            current_minute_has_records=all(o >= 0 for o in in_current.values()),
            records_recently=any(o >= 0 for o in recent.values()),
        )

    def records_since(self, since_ms: int) -> int:
        """Records on the topic with a Kafka timestamp at or after ``since_ms`` (for a topic whose offsets
        follow its timestamps, as append time guarantees): per partition, high watermark minus the offset
        of the first such record."""
        with self.consumer() as consumer:
            partitions = self.partitions(consumer)
            firsts = self._offsets_at(consumer, partitions, since_ms)
            watermarks = self._watermarks(consumer, partitions)
        return sum(max(watermarks[p][1] - first, 0) for p, first in firsts.items() if first >= 0)

    def next_record_ms(self, at_or_after_ms: int) -> int | None:
        """Kafka timestamp of the earliest record at or after ``at_or_after_ms`` on any partition."""
        with self.consumer() as consumer:
            offsets = self._offsets_at(consumer, self.partitions(consumer), at_or_after_ms)
            found = self._first_timestamps(consumer, {p: o for p, o in offsets.items() if o >= 0})
        return min(found.values()) if found else None

    def _first_timestamps(self, consumer: Consumer, positions: Mapping[int, int]) -> dict[int, int]:
        """Timestamp of the record at each partition's position (one message read per partition)."""
        if not positions:
            return {}
        found: dict[int, int] = {}
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in positions.items()])
        try:
            deadline = time.monotonic() + self.timeout_seconds
            while len(found) < len(positions) and time.monotonic() < deadline:
                for message in consumer.consume(len(positions), timeout=0.5):
                    partition = cast(int, message.partition())
                    if message.error() is None and partition not in found:
                        found[partition] = message.timestamp()[1]
        finally:
            consumer.unassign()
        return found

    def first_pending_timestamps(self) -> dict[int, int]:
        """Kafka timestamp (epoch ms) of the first record not yet ingested, per partition with lag.

        The oldest of these is the first minute the lag sensor still has to run.
        """
        with self.consumer() as consumer:
            return self._first_pending(consumer, self._lags(consumer, self.partitions(consumer)))


@contextmanager
def _host_lock(name: str) -> Iterator[None]:
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"stock-platform-commit-{digest}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
