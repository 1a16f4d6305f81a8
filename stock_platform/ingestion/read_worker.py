"""A read worker: consumes part of a minute's offset ranges and streams encoded lines to stdout.

Started by ``minute_object.write_minute_files_parallel`` with a JSON spec on stdin. It imports neither
Dagster nor the warehouse clients, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import sys

from stock_platform.ingestion.minute_object import ChunkEncoder, write_frame
from stock_platform.resources.kafka_reader import OffsetRange, read_ranges


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    encoder = ChunkEncoder(minute_iso=spec["minute_iso"], topic=spec["topic"], object_key=spec["object_key"])
    ranges = tuple(OffsetRange(*r) for r in spec["ranges"])
    for chunk in read_ranges(
        spec["consumer"], spec["topic"], ranges, spec["batch_size"], spec["stall_timeout"]
    ):
        lines, rejected = encoder.encode(chunk)
        if lines:
            write_frame(out, b"R", b"".join(lines))
        if rejected:
            write_frame(out, b"D", b"".join(rejected))
    write_frame(out, b"S", encoder.stats.to_json())
    out.flush()


if __name__ == "__main__":
    main()
