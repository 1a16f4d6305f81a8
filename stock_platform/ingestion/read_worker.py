"""A read worker: reads offset ranges given as a JSON spec on stdin, in one of two ways.

- A part of one large minute (``minute_object.write_minute_files_parallel``): streams the encoded lines
  to stdout in frames; the parent compresses them into the minute's files.
- A group of minutes (``minute_object.write_minute_group_in_worker``, the spec has ``targets``): writes
  each minute's files itself (``write_minute_group``) and prints their stats, a JSON line each.

It imports neither Dagster nor the warehouse clients, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from stock_platform.ingestion.minute_object import (
    READ_STALLED_EXIT,
    ChunkEncoder,
    MinuteTarget,
    write_frame,
    write_minute_group,
)
from stock_platform.resources.kafka_reader import OffsetRange, ReadStalled, read_ranges


def stream_minute_part(spec: dict[str, Any]) -> None:
    out = sys.stdout.buffer
    encoder = ChunkEncoder(minute_iso=spec["minute_iso"], topic=spec["topic"], object_key=spec["object_key"])
    for chunk in _chunks(spec):
        lines, rejected = encoder.encode(chunk)
        if lines:
            write_frame(out, b"R", b"".join(lines))
        if rejected:
            write_frame(out, b"D", b"".join(rejected))
    write_frame(out, b"S", encoder.stats.to_json())
    out.flush()


def write_group(spec: dict[str, Any]) -> None:
    targets = [
        MinuteTarget(
            minute_iso=t["minute_iso"],
            object_key=t["object_key"],
            ranges=tuple((p, start, end) for p, start, end in t["ranges"]),
            raw_path=Path(t["raw_path"]),
            dead_letter_path=Path(t["dead_letter_path"]),
        )
        for t in spec["targets"]
    ]
    all_stats = write_minute_group(_chunks(spec), targets, topic=spec["topic"])
    sys.stdout.buffer.write(b"\n".join(stats.to_json() for stats in all_stats))
    sys.stdout.buffer.flush()


def _chunks(spec: dict[str, Any]):
    ranges = tuple(OffsetRange(*r) for r in spec["ranges"])
    return read_ranges(spec["consumer"], spec["topic"], ranges, spec["batch_size"], spec["stall_timeout"])


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    try:
        write_group(spec) if "targets" in spec else stream_minute_part(spec)
    except ReadStalled as exc:
        print(exc, file=sys.stderr)
        sys.exit(READ_STALLED_EXIT)


if __name__ == "__main__":
    main()
