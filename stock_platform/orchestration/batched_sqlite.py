"""BatchedSqliteStorage: Dagster's SQLite instance storage, writing a batch of events in one transaction.

A range run of N minutes records one ``ASSET_MATERIALIZATION_PLANNED`` event per minute per asset when
it is created, and one ``ASSET_MATERIALIZATION`` per minute per asset as its steps end: ~3,400 events
for a 240-minute run of the pipeline's seven partitioned assets. Dagster's SQLite event log writes each
event on its own: a new engine and connection, then a commit, for the run's shard and again for the
index shard: ~5 ms per event here, against ~0.6 ms in batches of 250 (docs/benchmarks.md). That was a
third of a catch-up run's wall time, and the planned events, written by the daemon while the previous run
executes, took CPU from it.

Dagster already groups these events: planned events per run, and a range step's materializations per
output, arrive at the storage as one batch when ``DAGSTER_EVENT_BATCH_SIZE`` is above 0. Its SQLite
storage then still writes them one by one. This one writes each batch through one connection and one
transaction per shard file, with the same statements (the base class's own ``store_event`` per event),
so the rows are exactly those of event-by-event writes. If the batch fails, nothing of it is committed
and Dagster writes the events one by one instead.

One write is folded: each asset event also updates its asset's row in ``asset_keys`` (the last
materialization, run and event time), an insert that fails on the existing row and then an update, with
the whole event serialized a second time for ``last_materialization``. Within a batch only the last
value of each column survives, so the batch writes each asset's row once, at its end, with those values
(the 360 materializations of one asset in a catch-up run's step: one row write instead of 360).

Setting the batch size is part of choosing this storage: Dagster reads it from the environment only, so
constructing the storage sets ``DAGSTER_EVENT_BATCH_SIZE`` for the process unless it is already set.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dagster._core.definitions.events import AssetKey
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetKeyTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy import exc as db_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from stock_platform.orchestration.migration_scripts import remember_migration_scripts

BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
# Events per transaction. A batch holds the index shard's write lock while it is written (~1 ms per
# event), so other writers wait at most a fraction of a second; Dagster's busy timeout is 30 s.
BATCH_SIZE = 250


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose ``store_event_batch`` is one transaction per shard (module docstring)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # While a batch is written: its open connections by shard, and the thread writing it. Set before
        # the base class's constructor, which may already connect (to create the index shard).
        self._batch: dict[str, tuple[Engine, Connection]] | None = None
        self._batch_thread: int | None = None
        # While a batch is written: its asset events (with their index ids) by asset, in order of arrival.
        self._asset_events: dict[AssetKey, list[tuple[EventLogEntry, int]]] = {}
        self._schema_present: set[tuple[str, str]] = set()  # tables and columns known to exist
        super().__init__(base_dir, inst_data)

    def has_table(self, table_name: str) -> bool:
        # Dagster asks before it writes the tags of every partitioned asset event, and each question is a
        # new engine, connection and schema lookup on the index shard: ~4 ms, 0.65 s of a 240-minute
        # catch-up run's ~1,700 materializations, on the run's own thread. A table that exists stays
        # (Dagster's migrations add tables, none drops one), so a yes is kept; a no is asked again.
        key = ("table", table_name)
        return key in self._schema_present or self._keep(key, super().has_table(table_name))

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        # Asked for every asset event, on the event's own connection: a reflection of the asset_keys
        # table's columns (~0.3 s of a 360-minute catch-up run's ~2,500 materializations). Dagster's
        # migrations add columns, none drops one: a yes is kept, as for tables.
        key = ("asset_keys column", column_name)
        return key in self._schema_present or self._keep(
            key, super()._has_asset_key_col_on_connection(conn, column_name)
        )

    def _keep(self, key: tuple[str, str], present: bool) -> bool:
        """The answer of a schema lookup, remembered when it is a yes."""
        if present:
            self._schema_present.add(key)
        return present

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        batch = self._batch
        if batch is None or not self._in_batch():
            with super()._connect(shard) as conn:
                yield conn
            return
        if shard not in batch:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=NullPool,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            conn = engine.connect()
            conn.begin()
            batch[shard] = (engine, conn)
        yield batch[shard][1]

    def _in_batch(self) -> bool:
        return self._batch is not None and self._batch_thread == threading.get_ident()

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        if not self._in_batch():
            super()._store_asset_event(conn, event, event_id)
        elif event.dagster_event is not None and event.dagster_event.asset_key is not None:
            self._asset_events.setdefault(event.dagster_event.asset_key, []).append((event, event_id))

    def _store_asset_rows(self, conn: Connection) -> None:
        """Write each asset's ``asset_keys`` row once, as the batch's events one by one would leave it:
        each column holds the value of the last event that sets it. Assets come in the order of their
        first event, so new rows get the ids event-by-event writes give them."""
        has_index_cols = self._has_asset_key_index_cols_on_connection(conn)
        every_column = {"last_materialization", "last_run_id"} | (
            {"last_materialization_timestamp"} if has_index_cols else set()
        )
        for asset_key, events in self._asset_events.items():
            values: dict[str, Any] = {}
            for event, event_id in reversed(events):
                if every_column <= values.keys():
                    break  # no earlier event can change the row any more
                for column, value in self._get_asset_entry_values(event, event_id, has_index_cols).items():
                    values.setdefault(column, value)
            if not values:
                continue
            key = asset_key.to_string()
            try:
                conn.execute(AssetKeyTable.insert().values(asset_key=key, **values))
            except db_exc.IntegrityError:
                conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == key))

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # The lock every other connection of this storage takes: other threads wait for the batch.
        with self._db_lock:
            self._batch, self._batch_thread = {}, threading.get_ident()
            self._asset_events = {}
            try:
                for event in events:
                    self.store_event(event)
                if self._asset_events:
                    with self._connect(INDEX_SHARD_NAME) as conn:
                        self._store_asset_rows(conn)
                # The runs' shards first, the index last: if the index commit failed, Dagster's
                # one-by-one retry would repeat events in a run's log, never lose one from the index.
                for _, (_, conn) in sorted(self._batch.items(), key=lambda item: item[0] == INDEX_SHARD_NAME):
                    conn.commit()
            finally:
                batch, self._batch, self._batch_thread = self._batch, None, None
                self._asset_events = {}
                for engine, conn in batch.values():
                    conn.close()  # rolls back whatever was not committed
                    engine.dispose()


class BatchedSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (same files under ``base_dir``) with the batched event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # The base constructor's own lines, with the batched event log: it names its event log class.
        os.environ.setdefault(BATCH_SIZE_ENV, str(BATCH_SIZE))
        # Before any storage checks its schema: the code server opens a new instance every sensor tick.
        remember_migration_scripts()
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Any) -> BatchedSqliteStorage:  # type: ignore[override]
        return cls.from_local(inst_data=inst_data, **config_value)  # the base's returns its own class
