"""A read worker: consumes part of a large minute's offset ranges and streams encoded lines to stdout
(``minute_object.write_minute_files_parallel``), or a group of whole minutes and writes their files
(``minute_object.write_minute_groups_parallel``). Started with a JSON spec on stdin. It imports neither
Dagster nor the warehouse clients, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from confluent_kafka import KafkaException

from stock_platform.ingestion.minute_object import (
    ChunkEncoder,
    targets_of_spec,
    write_frame,
    write_minute_group,
)
from stock_platform.resources.kafka_reader import READ_FAILED_EXIT, KafkaReadFailed, OffsetRange, read_ranges


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    ranges = tuple(OffsetRange(*r) for r in spec["ranges"])
    chunks = read_ranges(spec["consumer"], spec["topic"], ranges, spec["batch_size"], spec["stall_timeout"])
    try:
        if "targets" in spec:
            read_group(spec, chunks)
        else:
            read_part_of_minute(spec, chunks)
    except (KafkaReadFailed, KafkaException) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}")
        sys.exit(READ_FAILED_EXIT)


def read_group(spec: dict, chunks: Iterator[list]) -> None:
    """A group of whole minutes: write their files here, report each minute's stats as one JSON list."""
    stats = write_minute_group(chunks, targets_of_spec(spec), topic=spec["topic"])
    sys.stdout.buffer.write(json.dumps([s.to_dict() for s in stats]).encode())


def read_part_of_minute(spec: dict, chunks: Iterator[list]) -> None:
    """Part of a large minute: stream its lines to the parent as frames, which writes the minute's files."""
    out = sys.stdout.buffer
    encoder = ChunkEncoder(minute_iso=spec["minute_iso"], topic=spec["topic"], object_key=spec["object_key"])
    for chunk in chunks:
        lines, rejected = encoder.encode(chunk)
        if lines:
            write_frame(out, b"R", b"".join(lines))
        if rejected:
            write_frame(out, b"D", b"".join(rejected))
    write_frame(out, b"S", encoder.stats.to_json())
    out.flush()


if __name__ == "__main__":
    main()
