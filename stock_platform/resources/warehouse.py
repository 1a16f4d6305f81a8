"""Warehouses for the raw table: DuckDB (embedded default, a local file) and Snowflake.

Both load whole minutes from their raw objects and replace exactly those minutes in one transaction, so
a re-run (or a retry after a crash between delete and insert) never leaves a minute duplicated or
half-loaded. The table shapes are in docs/contracts.md; each row's JSON is the envelope, which carries
its minute and Kafka offsets, so dbt reads the same column on both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from dagster_snowflake import SnowflakeResource
from pydantic import Field

from stock_platform.ingestion.object_keys import minute_iso, stage_path
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


def _identifier(name: str) -> str:
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


class SnowflakeWarehouse(Warehouse):
    """The raw table ``BRONZE_STOCK_QUOTES_RAW(V VARIANT)`` in Snowflake, loaded through an internal stage.

    Each minute's object is PUT to a stage folder unique to the minute, then, in one transaction, the
    minute's rows are deleted (by ``V:minute``) and the staged files copied in with ``FORCE = TRUE``:
    COPY's load history would otherwise skip a file it already loaded, and the delete is what makes the
    forced copy not duplicate. Several minutes share one transaction and one COPY, so a cadence of every N
    minutes costs one warehouse resume for N minutes.
    """

    snowflake: SnowflakeResource
    table: str = "BRONZE_STOCK_QUOTES_RAW"
    stage: str = "STOCK_QUOTES_STAGE"

    def _qualified(self, name: str) -> str:
        # Qualify with the resource's database and schema so statements never depend on a session's
        # current schema (fakesnow's server, for one, does not take it from the login).
        if "." not in name and self.snowflake.database and self.snowflake.schema_:
            name = f"{self.snowflake.database}.{self.snowflake.schema_}.{name}"
        return _identifier(name)

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        table, stage = self._qualified(self.table), self._qualified(self.stage)
        if not files:
            return {}
        staged = []
        with tempfile.TemporaryDirectory() as folder, self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            for f in files:
                folder_path = stage_path(topic, f.partition_key)
                # PUT names the staged file after the local one; a fixed name per minute keeps re-runs
                # overwriting the same staged file rather than adding a second one.
                local = Path(folder) / folder_path.replace("/", "_") / "minute.ndjson.gz"
                local.parent.mkdir(parents=True)
                shutil.copyfile(f.path, local)
                cursor.execute(
                    f"PUT 'file://{local.as_posix()}' @{stage}/{folder_path}/ "
                    "AUTO_COMPRESS = FALSE SOURCE_COMPRESSION = GZIP OVERWRITE = TRUE"
                )
                staged.append(folder_path)
            minutes = [minute_iso(f.partition_key) for f in files]
            cursor.execute("BEGIN")
            try:
                cursor.execute(
                    f"DELETE FROM {table} WHERE V:minute::STRING IN ({', '.join(['%s'] * len(minutes))})",
                    minutes,
                )
                # One COPY per minute folder, all in the one transaction (and one warehouse resume).
                # A single COPY with FILES = (...) would do as well on Snowflake; fakesnow only resolves
                # internal-stage folders, so the folder form is what both accept.
                for folder_path in staged:
                    cursor.execute(
                        f"COPY INTO {table} FROM @{stage}/{folder_path}/ "
                        "FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP) FORCE = TRUE ON_ERROR = ABORT_STATEMENT"
                    )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute(
                f"SELECT V:minute::STRING, COUNT(*) FROM {table} "
                f"WHERE V:minute::STRING IN ({', '.join(['%s'] * len(minutes))}) GROUP BY 1",
                minutes,
            )
            counts = {minute: int(n) for minute, n in cursor.fetchall()}
        return {f.partition_key: counts.get(minute_iso(f.partition_key), 0) for f in files}

    def minute_row_count(self, partition_key: str) -> int:
        with self.snowflake.get_connection() as conn:
            cursor = conn.cursor()
            cursor.execute(
                f"SELECT COUNT(*) FROM {self._qualified(self.table)} WHERE V:minute::STRING = %s",
                [minute_iso(partition_key)],
            )
            row = cursor.fetchone()
        return int(row[0]) if row else 0
