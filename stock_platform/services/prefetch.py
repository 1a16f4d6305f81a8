"""Fetch what the local services run from (Kafka jars, the S3 server binary) before first use, and find
PostgreSQL's server binaries (installed with apt, not fetched)."""

from __future__ import annotations

import sys

from stock_platform.services.kafka import resolve_jars
from stock_platform.services.postgres import server_bin_dir
from stock_platform.services.process import MissingPrerequisite, ServiceFailed
from stock_platform.services.s3 import resolve_binary


def main() -> int:
    try:
        print(f"Kafka jars: {resolve_jars()}")
        print(f"S3 server:  {resolve_binary()}")
        print(f"PostgreSQL: {server_bin_dir()}")
    except (MissingPrerequisite, ServiceFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
