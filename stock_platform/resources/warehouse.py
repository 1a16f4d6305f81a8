"""Warehouses for the raw table: DuckDB (embedded default, a local file) here, Snowflake in
stock_platform/resources/snowflake_warehouse.py (imported only when configured: its client library
takes seconds to import, which every run of a DuckDB platform would pay).

Both load whole minutes from their raw objects and replace exactly those (topic, minute) slices in one
transaction, so a re-run (or a retry after a crash between delete and insert) never leaves a minute
duplicated or half-loaded, and a load of one topic never touches another topic's rows. The same
transaction records each loaded minute in a ledger (topic, minute, object key, rows, loaded at), which
is what tells a minute loaded with 0 rows from one never loaded, and what the check
``warehouse_has_every_lake_minute`` compares with the lake. The table shapes are in docs/contracts.md;
each row's JSON is the envelope, which carries its minute, topic and Kafka offsets, so dbt reads the
same column on both.
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

from stock_platform.partitions import MINUTE_KEY_FORMAT, minute_window

DUCKDB_TABLE = "main.bronze_stock_quotes_raw"
DUCKDB_LEDGER = "main.bronze_raw_loaded_minutes"
# The raw table's layout (docs/contracts.md). The envelope text is stored with ZSTD: DuckDB's default
# (dictionary + FSST) spent ~2.3 s of a 360-minute load's ~6.6 s analysing and compressing the ~1 GB of
# envelopes, and stored them in ~3x the space (24 h of the catch-up benchmark: 1,612 MB against 507 MB);
# silver reads ZSTD as fast (docs/benchmarks.md, stop 32). A table created before keeps its compression.
DUCKDB_RAW_TABLE_DDL = f"""
create table if not exists {DUCKDB_TABLE} (
    v json using compression zstd, minute timestamp, object_key varchar, kafka_partition integer,
    kafka_offset bigint, loaded_at timestamp, topic varchar
)
"""
# The envelope fields the DuckDB raw table also keeps as columns, with their types (json_transform's form).
ENVELOPE_IDS = '{"kafka_partition": "INTEGER", "kafka_offset": "BIGINT"}'
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
        """Replace each (topic, minute)'s rows by its object's rows and record the minute in the ledger,
        all in one transaction; rows loaded per minute."""
        raise NotImplementedError

    def minute_row_count(self, partition_key: str, topic: str | None = None) -> int:
        """Rows of the minute in the raw table (of one topic, or of all)."""
        raise NotImplementedError

    def loaded_minutes(
        self, topic: str, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> dict[str, int]:
        """The ledger: partition key -> rows of each minute of ``topic`` loaded in [start, end)."""
        raise NotImplementedError


def utc_naive(moment: dt.datetime) -> dt.datetime:
    """The naive-UTC form the warehouses store minutes in."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def partition_key_of(minute: dt.datetime) -> str:
    """The partition key of a minute read back from the warehouse (naive UTC or aware)."""
    return utc_naive(minute).strftime(MINUTE_KEY_FORMAT)


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
        """A connection to the file, waiting up to ``lock_wait_seconds`` for another writer's lock.

        Not dagster-duckdb's DuckDBResource (so the project does not depend on it): its connection
        retries any DuckDB I/O error, not only a held lock, ten times over about 100 s whatever is
        configured, then raises DuckDB's own error; a run here waits as long as configured and then says
        which file is held (WarehouseBusy), which the step's retry policy and the fault tests rely on.
        """
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
        """Create the raw table and the ledger, or bring an older layout up to date, in one transaction.

        Tables from before the ledger get their ``topic`` column (appended, filled from each row's
        envelope) and a ledger built from the minutes already in the table, so a migrated warehouse does
        not report its earlier minutes as missing. (A 0-row minute loaded before the ledger existed left
        no trace, so it is reported until a rebuild loads it again.)
        """
        conn.execute("begin transaction")
        try:
            columns = {
                name
                for (name,) in conn.execute(
                    "select column_name from duckdb_columns() where schema_name = ? and table_name = ?",
                    DUCKDB_TABLE.split("."),
                ).fetchall()
            }
            if not columns:
                conn.execute(DUCKDB_RAW_TABLE_DDL)
            elif "topic" not in columns:
                conn.execute(f"alter table {DUCKDB_TABLE} add column if not exists topic varchar")
                conn.execute(f"update {DUCKDB_TABLE} set topic = v->>'topic' where topic is null")
            ledger_exists = conn.execute(
                "select count(*) from duckdb_tables() where schema_name = ? and table_name = ?",
                DUCKDB_LEDGER.split("."),
            ).fetchone()
            if not (ledger_exists and ledger_exists[0]):
                conn.execute(
                    f"""
                    create table {DUCKDB_LEDGER} (
                        topic varchar not null,
                        minute timestamp not null,
                        object_key varchar,
                        row_count bigint not null,
                        loaded_at timestamp not null,
                        primary key (topic, minute)
                    )
                    """
                )
                conn.execute(
                    f"""
                    insert into {DUCKDB_LEDGER}
                    select topic, minute, any_value(object_key), count(*), max(loaded_at)
                    from {DUCKDB_TABLE} where topic is not null and minute is not null
                    group by topic, minute
                    """
                )
            conn.execute("commit")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.execute("rollback")
            raise

    def load_minutes(self, topic: str, files: Sequence[MinuteFile]) -> dict[str, int]:
        if not files:
            return {}
        loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        minutes = {f.partition_key: minute_window(f.partition_key)[0].replace(tzinfo=None) for f in files}
        conn = self.connect()
        try:
            self.ensure_table(conn)
            conn.execute("begin transaction")
            # All the run's minutes in a few statements, not four per minute: a catch-up run of hundreds
            # of minutes is one scan of its files (read in parallel), one delete and one insert.
            conn.execute("create temp table load_files (path varchar, minute timestamp, object_key varchar)")
            conn.executemany(
                "insert into load_files values (?, ?, ?)",
                [[str(f.path), minutes[f.partition_key], f.object_key] for f in files],
            )
            # Keyed by (minute, topic): a second topic loaded into the same table keeps its rows.
            conn.execute(
                f"delete from {DUCKDB_TABLE} where topic = ? and minute in (select minute from load_files)",
                [topic],
            )
            # read_json_objects keeps each line's JSON text as is: the envelope lands unchanged in v. One
            # json_transform parses it once for both identity columns (two ->> parse it twice: 0.3-0.5 s
            # more per 1.44 M envelopes, docs/benchmarks.md).
            conn.execute(
                f"""
                insert into {DUCKDB_TABLE}
                select j.json, f.minute, f.object_key, j.ids.kafka_partition, j.ids.kafka_offset, ?::timestamp, ?
                from (
                    select json, filename, json_transform(json, '{ENVELOPE_IDS}') as ids
                    from read_json_objects(?, format = 'newline_delimited', compression = 'gzip', filename = true)
                ) as j
                join load_files as f on j.filename = f.path
                """,
                [loaded_at, topic, [str(f.path) for f in files]],
            )
            counted = dict(
                conn.execute(
                    f"""
                    select minute, count(*) from {DUCKDB_TABLE}
                    where topic = ? and minute in (select minute from load_files) group by minute
                    """,
                    [topic],
                ).fetchall()
            )
            rows = {key: int(counted.get(minute, 0)) for key, minute in minutes.items()}
            conn.execute(
                f"delete from {DUCKDB_LEDGER} where topic = ? and minute in (select minute from load_files)",
                [topic],
            )
            conn.executemany(
                f"insert into {DUCKDB_LEDGER} values (?, ?, ?, ?, ?)",
                [
                    [topic, minutes[f.partition_key], f.object_key, rows[f.partition_key], loaded_at]
                    for f in files
                ],
            )
            conn.execute("commit")  # load_files, a temp table, goes with the connection
        except BaseException:
            # Nothing begun yet, or DuckDB already rolled the failed transaction back: either is fine.
            with contextlib.suppress(duckdb.Error):
                conn.execute("rollback")
            raise
        finally:
            conn.close()
        return rows

    def minute_row_count(self, partition_key: str, topic: str | None = None) -> int:
        minute = minute_window(partition_key)[0].replace(tzinfo=None)
        conn = self.connect()
        try:
            self.ensure_table(conn)
            sql = f"select count(*) from {DUCKDB_TABLE} where minute = ?"
            params: list[object] = [minute]
            if topic is not None:
                sql += " and topic = ?"
                params.append(topic)
            result = conn.execute(sql, params).fetchone()
            return int(result[0]) if result else 0
        finally:
            conn.close()

    def loaded_minutes(
        self, topic: str, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> dict[str, int]:
        sql = f"select minute, row_count from {DUCKDB_LEDGER} where topic = ?"
        params: list[object] = [topic]
        if start is not None:
            sql += " and minute >= ?"
            params.append(utc_naive(start))
        if end is not None:
            sql += " and minute < ?"
            params.append(utc_naive(end))
        conn = self.connect()
        try:
            self.ensure_table(conn)
            return {partition_key_of(minute): int(n) for minute, n in conn.execute(sql, params).fetchall()}
        finally:
            conn.close()
