"""A catch-up run reads its minutes in groups, one pass per group (assets.read_groups, write_minute_group).

The reference is the per-minute path: each minute's files must hold exactly what write_minute_files
writes from that minute's records alone, whatever the group, the interleaving of partitions in the
consumer's chunks, the gaps between ranges and the invalid records among them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import time
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from stock_platform.ingestion import assets
from stock_platform.ingestion.assets import GROUP_READ_RECORDS, group_ranges, read_groups
from stock_platform.ingestion.minute_object import (
    MinuteObjectStats,
    MinuteTarget,
    staging_paths,
    write_minute_files,
    write_minute_group,
)
from stock_platform.partitions import minute_key, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import (
    KafkaResource,
    KafkaUnavailable,
    MinuteBatch,
    MinuteNotClosed,
    OffsetRange,
    RecordsDeleted,
)
from stock_platform_tests.fake_kafka import FakeCluster, FakeMessage
from stock_platform_tests.ingestion.ingest_helpers import quote

TOPIC = "stock-quotes"
BASE_MS = 1795853100000
PARTITIONS = 3


def value(kind: int, seq: int, ts: int) -> bytes:
    if kind == 0:
        return b"not json"
    if kind == 1:
        return b""
    return encode_record(quote(seq, ts))


@st.composite
def topic_and_minutes(draw: st.DrawFn):
    """Per partition a log of records, cut into consecutive minutes (gaps allowed between them: offsets
    of no minute of the group), and the consumer's chunks: each partition in offset order, interleaved."""
    minutes = draw(st.integers(1, 6))
    logs: dict[int, list[FakeMessage]] = {}
    ranges: list[list[tuple[int, int, int]]] = [[] for _ in range(minutes)]
    seq = 0
    for p in range(PARTITIONS):
        offset = draw(st.integers(0, 5))
        for m in range(minutes):
            offset += draw(st.integers(0, 2)) if m else 0  # a gap before the minute
            count = draw(st.integers(0, 6))
            ranges[m].append((p, offset, offset + count))
            offset += count
        log = []
        for o in range(offset):
            seq += 1
            kind = draw(st.sampled_from([0, 1, 2, 2, 2, 2]))
            log.append(FakeMessage(TOPIC, p, o, BASE_MS + o, b"AAPL", value(kind, seq, BASE_MS + o)))
        logs[p] = log
    read = group_ranges(
        [
            MinuteBatch(TOPIC, f"k{m}", tuple(OffsetRange(*r) for r in ranges[m]), "records")
            for m in range(minutes)
        ]
    )
    pending = {
        r.partition: [msg for msg in logs[r.partition] if r.start <= msg.offset() < r.end] for r in read
    }
    order = draw(st.permutations([p for p, msgs in pending.items() for _ in msgs]))
    stream = [pending[p].pop(0) for p in order]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if b > a]
    return logs, ranges, chunks


def lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines() if path.exists() else []


@given(case=topic_and_minutes())
@settings(max_examples=150, deadline=None)
def test_each_minute_of_a_group_holds_what_its_own_read_would(case, tmp_path_factory) -> None:
    logs, ranges, chunks = case
    folder = tmp_path_factory.mktemp("group")
    targets = [
        MinuteTarget(
            minute_iso=f"2026-11-28T08:0{m}:00Z",
            object_key=f"raw/{m}.ndjson.gz",
            ranges=tuple(ranges[m]),
            raw_path=folder / f"g{m}.raw.gz",
            dead_letter_path=folder / f"g{m}.dead.gz",
        )
        for m in range(len(ranges))
    ]
    closed_early: dict[int, bytes] = {}  # a minute's file as it was when the read got past the minute

    def delivered():
        """The chunks; before each next one, the minutes the read is past (up to the first it is not) must
        be complete files."""
        last: dict[int, int] = {}
        for chunk in chunks:
            yield chunk
            for msg in chunk:
                last[msg.partition()] = msg.offset()
            for m, target in enumerate(targets):  # minutes close in order
                if not all(last.get(p, -1) >= end - 1 for p, start, end in target.ranges if end > start):
                    break
                closed_early.setdefault(m, gzip.decompress(target.raw_path.read_bytes()))

    group_stats = write_minute_group(delivered(), targets, topic=TOPIC)
    event(f"minutes closed before the read's end: {min(len(closed_early), 2)}+")
    for m, content in closed_early.items():  # it was complete then: each minute closes as soon as it can
        assert content == gzip.decompress(targets[m].raw_path.read_bytes())

    for m, target in enumerate(targets):
        own = [msg for p, start, end in ranges[m] for msg in logs[p] if start <= msg.offset() < end]
        alone = write_minute_files(
            [own],
            minute_iso=target.minute_iso,
            topic=TOPIC,
            object_key=target.object_key,
            raw_path=folder / f"a{m}.raw.gz",
            dead_letter_path=folder / f"a{m}.dead.gz",
        )
        assert sorted(lines(target.raw_path)) == sorted(lines(folder / f"a{m}.raw.gz"))
        assert sorted(lines(target.dead_letter_path)) == sorted(lines(folder / f"a{m}.dead.gz"))
        got = group_stats[m]
        assert (got.rows, got.dead_lettered, got.raw_bytes) == (
            alone.rows,
            alone.dead_lettered,
            alone.raw_bytes,
        )
        assert (got.min_timestamp_ms, got.max_timestamp_ms) == (
            alone.min_timestamp_ms,
            alone.max_timestamp_ms,
        )
        assert got.reasons == alone.reasons
        assert {p: s.records for p, s in got.partitions.items()} == {
            p: s.records for p, s in alone.partitions.items()
        }
        assert target.raw_path.exists(), "an empty minute still gets its (empty) object"


counts = st.lists(st.integers(0, GROUP_READ_RECORDS + 10), max_size=40)


@given(sizes=counts, threshold=st.integers(1, 2 * GROUP_READ_RECORDS), workers=st.integers(1, 4))
@settings(max_examples=300, deadline=None)
def test_read_groups_keep_the_minutes_order_and_bound_each_pass(
    sizes: list[int], threshold: int, workers: int
) -> None:
    batches = [
        MinuteBatch(TOPIC, f"k{i:03d}", (OffsetRange(0, 0, n),), "records") for i, n in enumerate(sizes)
    ]
    groups = read_groups(batches, threshold, workers)
    assert [b for g in groups for b in g] == batches
    for group in groups:
        total = sum(b.record_count for b in group)
        large = [b for b in group if b.record_count >= min(threshold, GROUP_READ_RECORDS)]
        assert total <= GROUP_READ_RECORDS or len(group) == 1
        assert not large or group == large[:1], (
            "a minute read alone (or by the parallel workers) has no company"
        )


# Runs of many small minutes, as a catch-up's: 0 to 12,000 records a minute, up to 10 hours.
small_minutes = st.lists(st.integers(0, 12_000) | st.just(6_000), min_size=1, max_size=600)


@given(sizes=small_minutes, workers=st.integers(1, 4), scale=st.sampled_from([1, 10, 40]))
@settings(max_examples=300, deadline=None)
def test_a_runs_minutes_are_cut_into_as_few_groups_as_the_bound_allows_of_about_equal_size(
    sizes: list[int], workers: int, scale: int
) -> None:
    """No minute is read alone (all are below the bounds): each group holds the minutes whose middle
    record falls in one of ceil(total / bound) equal shares of the run (rounded up to a multiple of the
    workers once the run is large enough to share), so it is within one minute's records of a share;
    the bound may cut a group once more where whole minutes cannot fill the shares exactly."""
    sizes = [n * scale for n in sizes]
    batches = [
        MinuteBatch(TOPIC, f"k{i:04d}", (OffsetRange(0, 0, n),), "records") for i, n in enumerate(sizes)
    ]
    groups = read_groups(batches, 10 * GROUP_READ_RECORDS, workers)
    total = sum(sizes)
    expected = max(1, -(-total // GROUP_READ_RECORDS))
    if workers > 1 and total >= assets.SHARED_READ_RECORDS:
        expected = -(-max(expected, workers) // workers) * workers
    event(f"groups {min(len(groups), 9)}")
    assert [b for g in groups for b in g] == batches
    largest = max(sizes)
    share = total / expected
    for group in groups:
        records = sum(b.record_count for b in group)
        assert records <= GROUP_READ_RECORDS
        assert records <= share + largest, (records, share, largest)
    if share + largest <= GROUP_READ_RECORDS:
        assert len(groups) <= expected, "the bound never had to cut"
    if total and largest <= share / 2 and share + largest <= GROUP_READ_RECORDS:
        # Every share holds a middle record: exactly the expected groups, none below half a share.
        assert len(groups) == expected
        assert all(sum(b.record_count for b in g) >= share / 2 for g in groups)


@given(
    appends=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5 * 60_000) | st.integers(0, 30 * 60_000)), max_size=90
    ),
    first=st.integers(0, 4),
    # A few minutes, and runs long enough for their boundaries to be looked up over several connections
    # at once (resources/kafka.py, LOOKUP_CONNECTIONS).
    span=st.integers(1, 5) | st.integers(16, 26),
    # Mostly closed minutes (by grace from 10 s), some within the grace or still open.
    now_after_ms=st.integers(10_000, 30_000) | st.integers(-5_000, 10_000),
    deleted=st.sampled_from([0, 0, 0, 1, 3]),
)
@settings(max_examples=200, deadline=None)
def test_minute_batches_answer_as_each_minute_asked_alone(
    appends, first, span, now_after_ms, deleted
) -> None:
    """One look at the topic for a run's minutes gives every minute the batch (or the refusal) its
    definition gives, as asking for it alone does: closed by records or grace, open, or partly deleted by
    retention."""
    cluster = FakeCluster(partitions=3)
    base = (BASE_MS // 60_000) * 60_000
    for partition, at in sorted(appends, key=lambda a: a[1]):
        cluster.append(partition, base + at, encode_record(quote(at, base + at)))
    cluster.low[0] = min(deleted, len(cluster.logs[0]))
    kafka = cluster.resource(grace_seconds=10.0)
    keys = [
        minute_key(dt.datetime.fromtimestamp((base + m * 60_000) / 1000, dt.UTC))
        for m in range(first, first + span)
    ]
    now = base + (first + span) * 60_000 + now_after_ms
    floor_key = keys[0]
    floors = {floor_key: {0: 0, 1: 0}}

    def reference(key: str):
        """The minute's batch from its definition, read off the logs: per partition, from the first record
        appended at or after the minute's start to the first at or after its end (the high watermark if
        none); closed once every partition has a record past the end, or after the grace period."""
        start_ms, end_ms = minute_window_ms(key)
        if now < end_ms:
            return MinuteNotClosed
        kept = {p: log[cluster.low[p] :] for p, log in cluster.logs.items()}
        past_end = all(any(m.timestamp()[1] >= end_ms for m in log) for log in kept.values())
        if not past_end and now < end_ms + 10_000:
            return MinuteNotClosed
        ranges = []
        for p, log in kept.items():
            high = len(cluster.logs[p])
            start, end = (
                next((m.offset() for m in log if m.timestamp()[1] >= t), high) for t in (start_ms, end_ms)
            )
            start = min(start, end, max(floors.get(key, {}).get(p, high), 0))
            if end > start and start < cluster.low[p]:
                return RecordsDeleted
            ranges.append(OffsetRange(p, start, end))
        return MinuteBatch(cluster.topic, key, tuple(ranges), "records" if past_end else "grace")

    def alone(key: str):
        try:
            return kafka.minute_batch(key, now_ms=now, floor=floors.get(key))
        except (MinuteNotClosed, RecordsDeleted) as exc:
            return type(exc)

    assert [alone(key) for key in keys] == [reference(key) for key in keys]
    expected = [reference(key) for key in keys]
    refusals = [e for e in expected if isinstance(e, type)]
    event(f"refused: {refusals[0].__name__}" if refusals else "batches")
    try:
        together = kafka.minute_batches(keys, now_ms=now, floors=floors)
    except (MinuteNotClosed, RecordsDeleted) as exc:
        assert type(exc) in refusals, "refused together only as some minute is refused alone"
        return
    assert not refusals
    assert together == expected


@given(
    groups=st.integers(1, 8),
    failing=st.none() | st.integers(0, 7),
    workers=st.integers(1, 3),
    delays=st.lists(st.sampled_from([0.0, 0.001, 0.005]), min_size=8, max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_groups_are_handed_out_in_order_and_nothing_is_left_when_one_fails(
    groups, failing, workers, delays, tmp_path_factory
) -> None:
    """assets._groups_built builds up to read_workers groups at once: the caller gets them in the groups'
    order; a group whose read fails stops the step as Kafka's failures do (dg.Failure), and every staging
    file of the groups built beside it is removed."""
    folder = tmp_path_factory.mktemp("staging")
    batches = [[MinuteBatch(TOPIC, f"k{g}", (OffsetRange(0, g, g + 1),), "records")] for g in range(groups)]

    def write_group(_kafka, group, staging_dir, _in_worker):
        index = int(group[0].partition_key[1:])
        time.sleep(delays[index])
        if index == failing:
            raise KafkaUnavailable(f"group {index} could not be read")
        raw, dead = staging_paths(staging_dir)
        raw.write_bytes(b"r")
        dead.write_bytes(b"d")
        return [(group[0], MinuteObjectStats(), raw, dead)]

    kafka = KafkaResource(topic=TOPIC, read_workers=workers)
    handed = []
    failed = failing is not None and failing < groups
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assets, "_write_group", write_group)
        try:
            with assets._groups_built(kafka, batches, folder) as built_groups:
                for built in built_groups:
                    handed.append(built[0][0].partition_key)
                    assets._discard(built)
        except dg.Failure as exc:
            assert failed and exc.description == f"group {failing} could not be read"
        else:
            assert not failed
    assert handed == [f"k{g}" for g in range(failing if failed else groups)]
    assert list(folder.iterdir()) == []
