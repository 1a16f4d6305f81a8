"""Warehouses for the raw table: DuckDB (embedded default, a local file) here, Snowflake in
stock_platform/resources/snowflake_warehouse.py (imported only when configured: its client library
takes seconds to import, which every run of a DuckDB platform would pay).

Both load whole minutes from their raw objects and replace exactly those minutes in one transaction, so
a re-run (or a retry after a crash between delete and insert) never leaves a minute duplicated or
half-loaded. The table shapes are in docs/contracts.md; each row's JSON is the envelope, which carries
its minute and Kafka offsets, so dbt reads the same column on both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from stock_platform.partitions import minute_window

DUCKDB_TABLE = "main.bronze_stock_quotes_raw"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")


@dataclass(frozen=True)
class MinuteFile:
    """One minute to load: its partition key, its raw object's key, and a local copy of the object."""

    partition_key: str
    object_key: str
    path: Path


class WarehouseBusy(RuntimeError):
    """The warehouse stayed locked by another writer for longer than the resource waits."""


class Warehouse(dg.ConfigurableResource):
    """Replace whole minutes of the raw table. Subclasses: DuckDBWarehouse, SnowflakeWarehouse."""

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        """Replace each minute's rows by its object's rows in one transaction; rows loaded per minute."""
        raise NotImplementedError

    def minute_row_count(self, partition_key: str) -> int:
        raise NotImplementedError


def sql_identifier(name: str) -> str:
    # Table and stage names go into SQL text (they cannot be bound parameters), so only plain names pass.
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return name


class DuckDBWarehouse(Warehouse):
    """The raw table in a local DuckDB file (one writer process at a time; others wait for the lock)."""

    path: str = Field(description="DuckDB database file, created on first use.")
    lock_wait_seconds: float = Field(
        default=120.0, description="How long to wait for another process's write lock on the file."
    )
    memory_limit: str = Field(
        default="256MB",
        description=(
            "DuckDB's memory cap for the load; past it DuckDB spills to disk. Without it a 1,000,000-quote "
            "minute takes ~650 MiB, with it ~280 MiB at about the same speed."
        ),
    )

    def connect(self) -> duckdb.DuckDBPyConnection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                # Insertion order is irrelevant to the table (rows carry their offsets) and keeping it
                # costs memory and time on large loads.
                return duckdb.connect(
                    self.path, config={"memory_limit": self.memory_limit, "preserve_insertion_order": False}
                )
            except duckdb.IOException as exc:
                # DuckDB allows one writing process per file; concurrent minute runs take turns.
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    # Another process (a second run, an open DuckDB shell, a BI tool) holds the file.
                    # The step's retry policy tries again later; the message says who to look for.
                    raise WarehouseBusy(
                        f"DuckDB file {self.path} stayed locked by another process for "
                        f"{self.lock_wait_seconds:g} s (lock_wait_seconds): {exc}"
                    ) from exc
                time.sleep(0.1)

    @staticmethod
    def ensure_table(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(
            f"""
            create table if not exists {DUCKDB_TABLE} (
                v json,
                minute timestamp,
                object_key varchar,
                kafka_partition integer,
                kafka_offset bigint,
                loaded_at timestamp
            )
            """
        )

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows: dict[str, int] = {}
        conn = self.connect()
        try:
            self.ensure_table(conn)
            conn.execute("begin transaction")
            for f in files:
                minute = minute_window(f.partition_key)[0].replace(tzinfo=None)
                conn.execute(f"delete from {DUCKDB_TABLE} where minute = ?", [minute])
                # read_json_objects keeps each line's JSON text as is: the envelope lands unchanged in v.
                inserted = conn.execute(
                    f"""
                    insert into {DUCKDB_TABLE}
                    select json, ?::timestamp, ?, (json->>'kafka_partition')::integer,
                           (json->>'kafka_offset')::bigint, ?::timestamp
                    from read_json_objects(?, format = 'newline_delimited', compression = 'gzip')
                    """,
                    [minute, f.object_key, loaded_at, str(f.path)],
                ).fetchone()
                rows[f.partition_key] = int(inserted[0]) if inserted else 0
            conn.execute("commit")
        except BaseException:
            # Nothing begun yet, or DuckDB already rolled the failed transaction back: either is fine.
            with contextlib.suppress(duckdb.Error):
                conn.execute("rollback")
            raise
        finally:
            conn.close()
        return rows

    def minute_row_count(self, partition_key: str) -> int:
        minute = minute_window(partition_key)[0].replace(tzinfo=None)
        conn = self.connect()
        try:
            self.ensure_table(conn)
            result = conn.execute(
                f"select count(*) from {DUCKDB_TABLE} where minute = ?", [minute]
            ).fetchone()
            return int(result[0]) if result else 0
        finally:
            conn.close()
