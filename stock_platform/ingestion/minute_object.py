"""Stream a minute's Kafka records into its raw object and dead-letter object, without holding the minute.

Lines are built from the validated message bytes (no re-serialization), gzip-compressed in a background
thread (zlib releases the GIL, so compression overlaps the Python loop) into a staging file, and the
file is published only once complete. Memory stays at one consume() chunk plus a few compression chunks
whatever the minute's size.
"""

from __future__ import annotations

import bisect
import json
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stock_platform.quotes import InvalidQuote, accepts_message, decode_message, encode_record
from stock_platform.resources.kafka_reader import ReadStalled

# Level 1 compresses quote JSON about 10x at ~1 GB/s on one core here; level 6 gains little more and
# costs 2-3x the CPU, which matters for a minute of 1,000,000 quotes.
GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib framing for a gzip member, readable by gzip, DuckDB and Snowflake
# Lines wait in memory until this many bytes go to the compression thread at once. A catch-up group has
# dozens of minutes open, each smaller than the 4 MiB this once was, so their lines all waited for the
# group's end; at 512 KiB they are compressed as the group is read (a 198,000-record group: 1.1 -> 1.0 s).
_FLUSH_BYTES = 512 << 10


class KafkaMessage(Protocol):
    """What is used of confluent_kafka.Message (whose stubs type every getter as optional)."""

    def partition(self) -> Any: ...
    def offset(self) -> Any: ...
    def timestamp(self) -> Any: ...
    def key(self) -> Any: ...
    def value(self) -> Any: ...


class GzipLineWriter:
    """Append lines to a gzip file; compression and disk writes happen on a background thread."""

    def __init__(self, path: Path, level: int = GZIP_LEVEL) -> None:
        self.path = path
        self.raw_bytes = 0
        self._file = path.open("wb")
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Bounded: if compression falls behind, the reader waits instead of buffering the minute.
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"gzip-{path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                self._file.write(self._compressor.compress(data))
            self._file.write(self._compressor.flush())
        except BaseException as exc:  # surfaced on close
            self._error = exc
            while self._queue.get() is not None:
                pass

    def write_lines(self, lines: list[bytes]) -> None:
        self._pending.extend(lines)
        self._pending_bytes += sum(map(len, lines))
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def write_blob(self, data: bytes) -> None:
        """Append already-joined lines (each ending in a newline)."""
        self._flush()
        self.raw_bytes += len(data)
        self._queue.put(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self.raw_bytes += len(data)
            self._pending, self._pending_bytes = [], 0
            self._queue.put(data)

    def close(self) -> int:
        """Finish the file; return its compressed size."""
        self._flush()
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if self._error is not None:
            raise self._error
        return self.path.stat().st_size

    def abort(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        self.path.unlink(missing_ok=True)


@dataclass
class PartitionSpan:
    first_offset: int
    last_offset: int
    records: int


@dataclass
class MinuteObjectStats:
    """What went into a minute's raw and dead-letter objects."""

    rows: int = 0
    dead_lettered: int = 0
    raw_bytes: int = 0
    min_timestamp_ms: int | None = None
    max_timestamp_ms: int | None = None
    partitions: dict[int, PartitionSpan] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    read_seconds: float = 0.0

    @property
    def records(self) -> int:
        return self.rows + self.dead_lettered

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "rows": self.rows,
                "dead_lettered": self.dead_lettered,
                "min_timestamp_ms": self.min_timestamp_ms,
                "max_timestamp_ms": self.max_timestamp_ms,
                "partitions": {
                    p: [s.first_offset, s.last_offset, s.records] for p, s in self.partitions.items()
                },
                "reasons": dict(self.reasons),
                "raw_bytes": self.raw_bytes,
                "read_seconds": self.read_seconds,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> MinuteObjectStats:
        stats = cls()
        stats.merge_json(data)
        return stats

    def merge_json(self, data: bytes) -> None:
        """Add the stats a read worker reported (its part of the minute)."""
        other = json.loads(data)
        self.rows += other["rows"]
        self.dead_lettered += other["dead_lettered"]
        for attr, pick in (("min_timestamp_ms", min), ("max_timestamp_ms", max)):
            theirs, ours = other[attr], getattr(self, attr)
            if theirs is not None:
                setattr(self, attr, theirs if ours is None else pick(ours, theirs))
        for p, (first, last, records) in other["partitions"].items():
            span = self.partitions.get(int(p))
            if span is None:
                self.partitions[int(p)] = PartitionSpan(first, last, records)
            else:
                span.first_offset = min(span.first_offset, first)
                span.last_offset = max(span.last_offset, last)
                span.records += records
        self.reasons.update(other["reasons"])
        self.raw_bytes += other["raw_bytes"]
        self.read_seconds += other["read_seconds"]


def envelope_prefix(minute_iso: str, topic: str) -> bytes:
    return b'{"minute":%s,"topic":%s,"kafka_partition":' % (
        json.dumps(minute_iso).encode(),
        json.dumps(topic).encode(),
    )


# prefix (minute, topic), partition, offset, timestamp, object key (JSON), record (JSON, embedded as is)
_ENVELOPE = b'%s%d,"kafka_offset":%d,"kafka_timestamp_ms":%d,"object_key":%s,"quote":%s}\n'


def dead_letter_line(minute_iso: str, topic: str, message: KafkaMessage, reason: str) -> bytes:
    value = message.value()
    key = message.key()
    return (
        json.dumps(
            {
                "minute": minute_iso,
                "topic": topic,
                "kafka_partition": message.partition(),
                "kafka_offset": message.offset(),
                "kafka_timestamp_ms": message.timestamp()[1],
                "key": None if key is None else key.decode("utf-8", "replace"),
                "reason": reason,
                "payload": None if value is None else value.decode("utf-8", "replace"),
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


class ChunkEncoder:
    """Turns consumed messages into raw-object lines and dead-letter lines, keeping the minute's stats."""

    def __init__(self, *, minute_iso: str, topic: str, object_key: str) -> None:
        self.minute_iso = minute_iso
        self.topic = topic
        self.prefix = envelope_prefix(minute_iso, topic)
        self.key_json = json.dumps(object_key).encode()
        self.stats = MinuteObjectStats()

    def encode(self, chunk: Sequence[KafkaMessage]) -> tuple[list[bytes], list[bytes]]:
        stats, spans, prefix, key_json = self.stats, self.stats.partitions, self.prefix, self.key_json
        lines: list[bytes] = []
        rejected: list[bytes] = []
        timestamps = []
        # The hot loop of a large minute: envelope formatting and bookkeeping are inlined on purpose.
        for message in chunk:
            value = message.value()
            partition, offset, timestamp = message.partition(), message.offset(), message.timestamp()[1]
            timestamps.append(timestamp)
            span = spans.get(partition)
            if span is None:
                spans[partition] = PartitionSpan(offset, offset, 1)
            else:
                span.last_offset = offset
                span.records += 1
            if not accepts_message(value, message.key()):  # the producer's records pass here
                try:
                    record = decode_message(value, message.key())
                except InvalidQuote as exc:
                    rejected.append(dead_letter_line(self.minute_iso, self.topic, message, str(exc)))
                    stats.reasons[str(exc)] += 1
                    continue
                if b"\n" in value or b"\r" in value:
                    value = encode_record(record)  # pretty-printed JSON would break the line framing
            lines.append(_ENVELOPE % (prefix, partition, offset, timestamp, key_json, value))
        stats.rows += len(lines)
        stats.dead_lettered += len(rejected)
        if timestamps:
            low, high = min(timestamps), max(timestamps)
            stats.min_timestamp_ms = (
                low if stats.min_timestamp_ms is None else min(stats.min_timestamp_ms, low)
            )
            stats.max_timestamp_ms = (
                high if stats.max_timestamp_ms is None else max(stats.max_timestamp_ms, high)
            )
        return lines, rejected


class _MinuteFiles:
    """The raw file and the (lazily created) dead-letter file of a minute being built."""

    def __init__(self, raw_path: Path, dead_letter_path: Path) -> None:
        self.raw = GzipLineWriter(raw_path)
        self.dead_letter_path = dead_letter_path
        self.dead: GzipLineWriter | None = None  # most minutes have no rejected record

    def write(self, lines: list[bytes], rejected: list[bytes]) -> None:
        self.raw.write_lines(lines)
        if rejected:
            self.dead = self.dead or GzipLineWriter(self.dead_letter_path)
            self.dead.write_lines(rejected)

    def close(self) -> int:
        if self.dead is not None:
            self.dead.close()
        self.raw.close()
        return self.raw.raw_bytes

    def abort(self) -> None:
        self.raw.abort()
        if self.dead is not None:
            self.dead.abort()


def write_minute_files(
    chunks: Iterable[Sequence[KafkaMessage]],
    *,
    minute_iso: str,
    topic: str,
    object_key: str,
    raw_path: Path,
    dead_letter_path: Path,
) -> MinuteObjectStats:
    """Validate each message and write it to the raw file (envelope) or dead-letter file (reason)."""
    encoder = ChunkEncoder(minute_iso=minute_iso, topic=topic, object_key=object_key)
    files = _MinuteFiles(raw_path, dead_letter_path)
    started = time.perf_counter()
    try:
        for chunk in chunks:
            files.write(*encoder.encode(chunk))
        encoder.stats.read_seconds = time.perf_counter() - started
        encoder.stats.raw_bytes = files.close()
    except BaseException:
        files.abort()
        raise
    return encoder.stats


@dataclass(frozen=True)
class MinuteTarget:
    """One minute of a group read together: its offset ranges and where its files go."""

    minute_iso: str
    object_key: str
    ranges: tuple[tuple[int, int, int], ...]  # (partition, start, end)
    raw_path: Path
    dead_letter_path: Path


class _MinuteRouter:
    """Which minute of a group a record belongs to, from its partition and offset (each minute's ranges
    are disjoint; a record in none, between two ranges, belongs to no minute of the group)."""

    def __init__(self, targets: Sequence[MinuteTarget]) -> None:
        spans: dict[int, list[tuple[int, int, int]]] = {}
        for index, target in enumerate(targets):
            for partition, start, end in target.ranges:
                if end > start:
                    spans.setdefault(partition, []).append((start, end, index))
        self._spans = {p: sorted(s) for p, s in spans.items()}
        self._current: dict[int, tuple[int, int, int]] = {}  # records come in offset order per partition

    def minute_of(self, partition: int, offset: int) -> int | None:
        span = self._current.get(partition)
        if span is not None and span[0] <= offset < span[1]:
            return span[2]
        spans = self._spans.get(partition, [])
        i = bisect.bisect_right(spans, offset, key=lambda s: s[0]) - 1
        if i < 0:
            return None
        span = spans[i]
        if offset >= span[1]:
            return None
        self._current[partition] = span
        return span[2]


def write_minute_group(
    chunks: Iterable[Sequence[KafkaMessage]], targets: Sequence[MinuteTarget], *, topic: str
) -> list[MinuteObjectStats]:
    """Like write_minute_files for several minutes read in one pass: ``chunks`` covers their ranges (and
    possibly offsets between them, which belong to no minute and are skipped); each record goes to its
    minute's files. A catch-up run reads its hours this way instead of opening a consumer per minute."""
    router = _MinuteRouter(targets)
    encoders = [ChunkEncoder(minute_iso=t.minute_iso, topic=topic, object_key=t.object_key) for t in targets]
    files: list[_MinuteFiles | None] = [None] * len(targets)
    last_offsets: dict[int, int] = {}  # per partition, the last offset read
    closed = 0  # the minutes before this one are closed

    def close_minute(index: int) -> None:
        target = targets[index]
        # A minute without records still gets its (empty) object.
        minute_files = files[index] = files[index] or _MinuteFiles(target.raw_path, target.dead_letter_path)
        encoders[index].stats.raw_bytes = minute_files.close()

    started = time.perf_counter()
    try:
        for chunk in chunks:
            parts: dict[int, list[KafkaMessage]] = {}
            for message in chunk:
                partition, offset = message.partition(), message.offset()
                last_offsets[partition] = offset
                index = router.minute_of(partition, offset)
                if index is not None:
                    if index < closed:  # never: offsets come in order; else the record would be lost
                        raise RuntimeError(
                            f"{topic}[{partition}] offset {offset} arrived after its minute was closed"
                        )
                    parts.setdefault(index, []).append(message)
            for index, messages in parts.items():
                minute_files = files[index]
                if minute_files is None:
                    target = targets[index]
                    minute_files = files[index] = _MinuteFiles(target.raw_path, target.dead_letter_path)
                minute_files.write(*encoders[index].encode(messages))
            # Close each minute once the read is past it on all its partitions: its lines are compressed
            # while the group is still read, instead of all waiting in memory for the group's end.
            while closed < len(targets) and _read_past(targets[closed], last_offsets):
                close_minute(closed)
                closed += 1
        elapsed = time.perf_counter() - started
        for index in range(closed, len(targets)):
            close_minute(index)
        total = sum(e.stats.records for e in encoders) or 1
        for encoder in encoders:  # the group's read time, shared by records
            encoder.stats.read_seconds = elapsed * encoder.stats.records / total
    except BaseException:
        for minute_files in files:
            if minute_files is not None:
                minute_files.abort()
        raise
    return [e.stats for e in encoders]


# A read worker's exit status when its read stalled (kafka_reader.ReadStalled): the broker, not the code.
READ_STALLED_EXIT = 3
_READ_WORKER = [sys.executable, "-m", "stock_platform.ingestion.read_worker"]


def _read_spec(
    consumer_config: dict, topic: str, ranges: Iterable[Sequence[int]], batch_size: int, stall_timeout: float
) -> dict[str, Any]:
    """What a read worker reads: its consumer's settings and the (partition, start, end) ranges."""
    return {
        "consumer": consumer_config,
        "topic": topic,
        "ranges": [list(r) for r in ranges],
        "batch_size": batch_size,
        "stall_timeout": stall_timeout,
    }


def write_minute_group_in_worker(
    targets: Sequence[MinuteTarget],
    *,
    ranges: Sequence[tuple[int, int, int]],
    consumer_config: dict,
    batch_size: int,
    stall_timeout: float,
    topic: str,
) -> list[MinuteObjectStats]:
    """write_minute_group in a read worker process that reads ``ranges`` (partition, start, end) itself.

    Validating and encoding records is single-threaded Python: a catch-up run builds two groups at once
    this way, one per core, while the run's process publishes the groups already built.
    """
    spec = {
        **_read_spec(consumer_config, topic, ranges, batch_size, stall_timeout),
        "targets": [
            {
                "minute_iso": t.minute_iso,
                "object_key": t.object_key,
                "ranges": [list(r) for r in t.ranges],
                "raw_path": str(t.raw_path),
                "dead_letter_path": str(t.dead_letter_path),
            }
            for t in targets
        ],
    }
    done = subprocess.run(
        _READ_WORKER,
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=False,
    )
    error = done.stderr.decode("utf-8", "replace")[-2000:]
    if done.returncode == READ_STALLED_EXIT:
        raise ReadStalled(error.strip().splitlines()[-1] if error.strip() else "a read worker's read stalled")
    if done.returncode != 0:
        raise RuntimeError(f"a read worker failed (exit status {done.returncode}): {error}")
    return [MinuteObjectStats.from_json(line) for line in done.stdout.splitlines()]


def _read_past(target: MinuteTarget, last_offsets: Mapping[int, int]) -> bool:
    """Whether the read has delivered the last offset of each of the minute's ranges (records come in
    offset order per partition). A range whose last offset is never delivered (a transaction marker)
    keeps its minute open until the group's end, as if this said no."""
    return all(last_offsets.get(p, -1) >= end - 1 for p, start, end in target.ranges if end > start)


def write_minute_files_parallel(
    groups: Sequence[Sequence[tuple[int, int, int]]],
    *,
    consumer_config: dict,
    batch_size: int,
    stall_timeout: float,
    minute_iso: str,
    topic: str,
    object_key: str,
    raw_path: Path,
    dead_letter_path: Path,
) -> MinuteObjectStats:
    """Like write_minute_files, with each group of (partition, start, end) ranges read by a child process.

    Consuming and validating a message costs several microseconds of Python each, so a large minute is
    split across processes; they stream finished lines back and this process only compresses them
    (on its writer threads). Line order differs between runs; the set of lines does not.
    """
    stats = MinuteObjectStats()
    files = _MinuteFiles(raw_path, dead_letter_path)
    frames: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(maxsize=8)
    started = time.perf_counter()
    workers = []
    try:
        for group in groups:
            spec = {
                **_read_spec(consumer_config, topic, group, batch_size, stall_timeout),
                "minute_iso": minute_iso,
                "object_key": object_key,
            }
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
            proc = subprocess.Popen(
                _READ_WORKER,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
            pump = threading.Thread(target=_pump_frames, args=(proc, frames), daemon=True)
            pump.start()
            workers.append((proc, pump, stderr))
        running = len(workers)
        while running:
            frame = frames.get()
            if frame is None:
                running -= 1
                continue
            kind, payload = frame
            if kind == b"R":
                files.raw.write_blob(payload)
            elif kind == b"D":
                files.dead = files.dead or GzipLineWriter(dead_letter_path)
                files.dead.write_blob(payload)
            else:
                stats.merge_json(payload)
        failures = []
        for proc, pump, stderr in workers:
            pump.join()
            if proc.wait() != 0:
                stderr.seek(0)
                failures.append(stderr.read().decode("utf-8", "replace")[-2000:])
        if failures:
            raise RuntimeError(f"a read worker failed: {failures[0]}")
        stats.read_seconds = time.perf_counter() - started
        stats.raw_bytes = files.close()
    except BaseException:
        for proc, _, _ in workers:
            proc.kill()
        files.abort()
        raise
    finally:
        for proc, _, stderr in workers:
            proc.wait()
            stderr.close()
    return stats


_FRAME_HEADER = struct.Struct(">cI")


def write_frame(out: BinaryIO, kind: bytes, payload: bytes) -> None:
    out.write(_FRAME_HEADER.pack(kind, len(payload)))
    out.write(payload)


def _pump_frames(proc: subprocess.Popen, frames: queue.Queue) -> None:
    """Forward a worker's frames to the writer loop; None marks the end of this worker's stream."""
    stream = proc.stdout
    assert stream is not None
    try:
        while header := stream.read(_FRAME_HEADER.size):
            if len(header) < _FRAME_HEADER.size:
                break
            kind, size = _FRAME_HEADER.unpack(header)
            frames.put((kind, stream.read(size)))
    finally:
        frames.put(None)


def staging_paths(folder: Path) -> tuple[Path, Path]:
    token = uuid.uuid4().hex
    return folder / f"{token}.raw.ndjson.gz", folder / f"{token}.dead.ndjson.gz"
