"""The ingestion assets over the in-memory Kafka topic, a local-folder lake and a DuckDB raw table, for the
fast Dagster-level tests of the commit rules and of the sensor's loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from stock_platform.partitions import minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform.resources.warehouse import DUCKDB_TABLE, DuckDBWarehouse, MinuteFile
from stock_platform_tests.fake_kafka import FakeCluster
from stock_platform_tests.ingestion.ingest_helpers import ASSETS, quote

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class LoadFailsForGood(DuckDBWarehouse):
    """A warehouse whose load fails (not retried, so the test sees the run's outcome at once)."""

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        raise dg.Failure(description="the warehouse refused the load", allow_retries=False)


class Platform:
    """The in-memory topic, a lake and a DuckDB raw table, and runs of the ingestion assets over them."""

    def __init__(self, tmp_path: Path, partitions: int = 2) -> None:
        self.cluster = FakeCluster(partitions=partitions)
        self.db_path = tmp_path / "warehouse.duckdb"
        self.resources = {
            "kafka": self.cluster.resource(),
            "object_store": LocalObjectStore(root=str(tmp_path / "lake")),
            "warehouse": DuckDBWarehouse(path=str(self.db_path)),
        }
        self.seq = 0
        self.appended_at: dict[int, int] = {}  # per partition, the last append time, to stay in order

    def append(self, key: str, partition: int, count: int) -> None:
        """``count`` valid quotes on ``partition``, appended within minute ``key`` after earlier ones."""
        start_ms, end_ms = minute_window_ms(key)
        for _ in range(count):
            ts = max(start_ms, self.appended_at.get(partition, start_ms) + 1)
            assert ts < end_ms, "the test appends at most 59,999 records per minute and partition"
            self.cluster.append(partition, ts, encode_record(quote(self.seq, ts, symbol=f"S{self.seq % 5}")))
            self.appended_at[partition] = ts
            self.seq += 1

    def run(
        self,
        first: str,
        last: str | None = None,
        assets: list[Any] = ASSETS,
        load_fails: bool = False,
        **materialize_kwargs: Any,
    ) -> dg.ExecuteInProcessResult:
        """One run of the minutes first..last, as kafka_lag_sensor requests it (a partition, or a range)."""
        resources = dict(self.resources)
        if load_fails:
            resources["warehouse"] = LoadFailsForGood(path=str(self.db_path))
        tags = dict(materialize_kwargs.pop("tags", {}))
        partition_key = first
        if last is not None and last != first:
            partition_key = None
            tags.update({RANGE_START: first, RANGE_END: last})
        return dg.materialize(
            assets,
            partition_key=partition_key,
            tags=tags,
            resources=resources,
            raise_on_error=False,
            **materialize_kwargs,
        )

    def loaded(self) -> list[tuple[int, int]]:
        """(Kafka partition, offset) of every row of the raw table, duplicates included."""
        if not self.db_path.exists():
            return []
        # The warehouse's own settings: DuckDB refuses a second configuration of a file open in-process.
        with self.resources["warehouse"].connect() as conn:
            rows = conn.execute(f"select kafka_partition, kafka_offset from {DUCKDB_TABLE}").fetchall()
        return sorted(rows)

    def assert_commit_covered_by_the_table(self, targets: Mapping[int, int]) -> None:
        """The invariant every commit must hold: it moves forward, and every offset between the group's
        position (the low watermark for a group that never committed) and it is a row of the raw table."""
        loaded = set(self.loaded())
        for p, target in targets.items():
            committed = self.cluster.committed.get(p)
            before = self.cluster.low[p] if committed is None else committed
            # A group's first commit may record its position as it is (an empty first minute).
            assert target > before or (committed is None and target == before), (
                f"partition {p}: commit {target} after {before}"
            )
            missing = [o for o in range(before, target) if (p, o) not in loaded]
            assert not missing, f"partition {p}: committing {target} before offsets {missing} are loaded"
