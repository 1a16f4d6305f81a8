"""The batched SQLite event log writes exactly what Dagster's own writes event by event.

Every table of every shard file (the index and each run's) is compared row by row after the same events
were stored one by one by Dagster's SqliteEventLogStorage and in random batches by
BatchedSqliteEventLogStorage; a batch that fails leaves nothing behind; and an instance written by
``prepare_dagster_home`` uses the batched path for a real range run's planned and materialization events.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationPlanned,
)
from dagster._core.events import (
    AssetMaterializationPlannedData,
    AssetObservationData,
    DagsterEvent,
    DagsterEventType,
    StepMaterializationData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stock_platform.orchestration import batched_sqlite
from stock_platform.orchestration.batched_sqlite import BatchedSqliteEventLogStorage
from stock_platform.runner import prepare_dagster_home

ASSETS = ["kafka_quote_batch", "raw_quote_table", "silver_quotes"]
PARTITIONS = ["2026-12-01-10:00", "2026-12-01-10:01", "2026-12-01-10:02"]
RUNS = ["run-a", "run-b"]
# Columns SQLite fills with the wall-clock time of the insert itself (server defaults), not from the event.
WALL_CLOCK_COLUMNS = {"create_timestamp", "update_timestamp", "migration_completed"}
T0 = 1_764_583_200.0  # 2025-12-01 10:00 UTC: events carry their own times


def dagster_event(kind: str, asset: int, partition: int | None) -> DagsterEvent:
    key = dg.AssetKey(ASSETS[asset])
    part = None if partition is None else PARTITIONS[partition]
    if kind == "planned":
        return DagsterEvent.build_asset_materialization_planned_event(
            "job", "step", AssetMaterializationPlannedData(key, partition=part)
        )
    step_events = {
        "materialization": lambda: (
            DagsterEventType.ASSET_MATERIALIZATION,
            StepMaterializationData(
                # A data version tag: the one tag Dagster indexes in asset_event_tags (as a run's do).
                dg.AssetMaterialization(
                    key, partition=part, metadata={"rows": asset}, tags={"dagster/data_version": f"v{asset}"}
                )
            ),
        ),
        "observation": lambda: (
            DagsterEventType.ASSET_OBSERVATION,
            AssetObservationData(dg.AssetObservation(key, partition=part, metadata={"lag": 3})),
        ),
        "check_planned": lambda: (
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
            AssetCheckEvaluationPlanned(asset_key=key, check_name="fresh"),
        ),
        "check": lambda: (
            DagsterEventType.ASSET_CHECK_EVALUATION,
            AssetCheckEvaluation(asset_key=key, check_name="fresh", passed=asset % 2 == 0),
        ),
    }
    if kind in step_events:
        event_type, data = step_events[kind]()
        return DagsterEvent(event_type.value, "job", step_key="step", event_specific_data=data)
    if kind == "run_start":
        return DagsterEvent(DagsterEventType.RUN_START.value, "job")
    assert kind == "run_success"
    return DagsterEvent(DagsterEventType.RUN_SUCCESS.value, "job")


def entry(index: int, run: int, kind: str, asset: int, partition: int | None) -> EventLogEntry:
    event = None if kind == "log" else dagster_event(kind, asset, partition)
    return EventLogEntry(
        error_info=None,
        level=10,
        user_message=f"message {index}",
        run_id=RUNS[run],
        timestamp=T0 + index,
        step_key=None if event is None or event.step_key is None else "step",
        job_name="job",
        dagster_event=event,
    )


event_specs = st.tuples(
    st.integers(0, len(RUNS) - 1),
    st.sampled_from(
        [
            "planned",
            "materialization",
            "observation",
            "check_planned",
            "check",
            "run_start",
            "run_success",
            "log",
        ]
    ),
    st.integers(0, len(ASSETS) - 1),
    st.one_of(st.none(), st.integers(0, len(PARTITIONS) - 1)),
)


def as_runs_emit(specs: list[tuple[int, str, int, int | None]]) -> list[tuple[int, str, int, int | None]]:
    """The specs without a check planned twice in one run: a run plans each of its checks once, and
    Dagster's own storage refuses a second plan's evaluation (DagsterInvariantViolationError)."""
    planned: set[tuple[int, int]] = set()
    kept = []
    for run, kind, asset, partition in specs:
        if kind == "check_planned":
            if (run, asset) in planned:
                continue
            planned.add((run, asset))
        kept.append((run, kind, asset, partition))
    return kept


def shards(base_dir: Path) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Every table of every shard file: rows in insertion order, without wall-clock columns."""
    dump: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for path in sorted(base_dir.glob("*.db")):
        conn = sqlite3.connect(path)
        try:
            tables = [
                r[0]
                for r in conn.execute("select name from sqlite_master where type = 'table' order by name")
            ]
            dump[path.name] = {}
            for table in tables:
                columns = [r[1] for r in conn.execute(f"pragma table_info('{table}')")]
                kept = [c for c in columns if c not in WALL_CLOCK_COLUMNS]
                names = ", ".join(f'"{c}"' for c in kept)  # some are keywords (limit)
                rows = conn.execute(f"select {names} from '{table}' order by rowid").fetchall()
                dump[path.name][table] = rows
        finally:
            conn.close()
    return dump


def in_batches(events: list[EventLogEntry], cuts: list[int]) -> list[list[EventLogEntry]]:
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(event_specs, min_size=1, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=6))
def test_batches_write_the_rows_event_by_event_writes_write(tmp_path_factory, specs, cuts) -> None:
    events = [entry(i, *spec) for i, spec in enumerate(as_runs_emit(specs))]
    assert_batches_write_what_one_by_one_writes(tmp_path_factory, events, cuts)


def assert_batches_write_what_one_by_one_writes(tmp_path_factory, events: list[EventLogEntry], cuts) -> None:
    """The events stored one by one by Dagster's SqliteEventLogStorage and in batches cut at ``cuts`` by
    BatchedSqliteEventLogStorage leave the same rows in every table of every shard, and read back the same."""
    one_by_one = tmp_path_factory.mktemp("reference")
    batched = tmp_path_factory.mktemp("batched")
    reference = SqliteEventLogStorage(str(one_by_one))
    for event in events:
        reference.store_event(event)
    storage = BatchedSqliteEventLogStorage(str(batched))
    for batch in in_batches(events, cuts):
        storage.store_event_batch(batch)

    assert shards(batched) == shards(one_by_one)
    # And what Dagster reads back through its API: per-partition materialization and planned state, and
    # each asset's last materialization (its asset_keys row).
    for name in ASSETS:
        key = dg.AssetKey(name)
        assert storage.get_materialized_partitions(key) == reference.get_materialized_partitions(key)
        assert storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ) == reference.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        assert storage.get_latest_materialization_events(
            [key]
        ) == reference.get_latest_materialization_events([key])


asset_event_specs = st.tuples(
    st.integers(0, len(RUNS) - 1),
    st.sampled_from(["planned", "materialization", "observation"]),
    st.integers(0, 1),
    st.one_of(st.none(), st.integers(0, len(PARTITIONS) - 1)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(asset_event_specs, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 12), max_size=3)
)
# A materialization, then a planned event of the same asset (which sets fewer columns); two new assets
# whose first events are not in the order of their names.
@example(specs=[(0, "materialization", 0, 0), (1, "planned", 0, 1)], cuts=[])
@example(specs=[(0, "materialization", 1, 0), (0, "materialization", 0, 0)], cuts=[])
def test_a_batch_leaves_each_assets_row_as_its_events_one_by_one_do(tmp_path_factory, specs, cuts) -> None:
    """A batch writes each asset's asset_keys row once, from its events' values (the last value of each
    column): the same row, and new rows in the order of their assets' first events, as one by one. Few
    assets and kinds, so that a batch often holds a materialization followed by a planned event or an
    observation of the same asset, which set fewer columns than it does."""
    events = [entry(i, *spec) for i, spec in enumerate(specs)]
    assert_batches_write_what_one_by_one_writes(tmp_path_factory, events, cuts)


@pytest.mark.parametrize("fail_at", [0, 3, 7])
def test_a_batch_that_fails_leaves_nothing_and_the_storage_stays_usable(
    tmp_path, monkeypatch, fail_at
) -> None:
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    first = [entry(i, 0, "materialization", i % 3, i % 3) for i in range(4)]
    storage.store_event_batch(first)
    before = shards(tmp_path)

    original = SqliteEventLogStorage.store_event
    calls = {"n": 0}

    def failing(self, event):
        if calls["n"] == fail_at:
            raise OSError("disk full")
        calls["n"] += 1
        original(self, event)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event", failing)
    second = [
        entry(10 + i, i % 2, kind, i % 3, i % 3) for i, kind in enumerate(["planned", "materialization"] * 4)
    ]
    with pytest.raises(OSError, match="disk full"):
        storage.store_event_batch(second)
    after = shards(tmp_path)
    # No shard kept any of the failed batch (a run's shard file it created stays, empty).
    assert {name: tables for name, tables in after.items() if name in before} == before
    assert all(not after[name]["event_logs"] for name in after.keys() - before.keys())
    monkeypatch.setattr(SqliteEventLogStorage, "store_event", original)

    # Dagster then writes the batch one by one; the result is as if the batch had never failed.
    for event in second:
        storage.store_event(event)
    reference_dir = tmp_path / "reference"
    reference = SqliteEventLogStorage(str(reference_dir))
    for event in first + second:
        reference.store_event(event)
    assert shards(tmp_path) == shards(reference_dir)


def test_other_threads_wait_for_a_batch_and_are_not_written_into_it(tmp_path) -> None:
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    events = [entry(i, 0, "materialization", i % 3, i % 3) for i in range(200)]
    other = [entry(1000 + i, 1, "planned", i % 3, i % 3) for i in range(50)]
    writer = threading.Thread(target=lambda: [storage.store_event(e) for e in other])
    writer.start()
    storage.store_event_batch(events)
    writer.join()
    assert len(storage.get_records_for_run(RUNS[0], limit=1000).records) == 200
    assert len(storage.get_records_for_run(RUNS[1], limit=1000).records) == 50


@dg.asset(partitions_def=dg.StaticPartitionsDefinition([f"p{i}" for i in range(30)]))
def minutes_like(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partitions": len(context.partition_keys)})


def test_the_local_instance_writes_a_range_runs_events_in_batches(tmp_path, monkeypatch) -> None:
    # Unset for the test, and unset again after it (the storage sets it for the whole process).
    monkeypatch.setenv(batched_sqlite.BATCH_SIZE_ENV, "0")
    monkeypatch.delenv(batched_sqlite.BATCH_SIZE_ENV)
    prepare_dagster_home(tmp_path)
    batches: list[int] = []
    original = BatchedSqliteEventLogStorage.store_event_batch

    def counting(self, events):
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(BatchedSqliteEventLogStorage, "store_event_batch", counting)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize(
            [minutes_like],
            instance=instance,
            tags={"dagster/asset_partition_range_start": "p0", "dagster/asset_partition_range_end": "p29"},
        )
        assert result.success
        assert instance.get_materialized_partitions(minutes_like.key) == {f"p{i}" for i in range(30)}
        planned = instance.get_event_records(
            dg.EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, asset_key=minutes_like.key),
            limit=100,
        )
        assert sorted(r.partition_key for r in planned) == sorted(f"p{i}" for i in range(30))
    # Constructing the storage turned Dagster's batching on; 30 planned and 30 materialization events
    # arrived as batches, not one by one.
    assert os.environ[batched_sqlite.BATCH_SIZE_ENV] == str(batched_sqlite.BATCH_SIZE)
    assert sum(n for n in batches if n > 1) >= 60, batches


def test_a_table_that_exists_is_looked_up_once_and_a_missing_one_every_time(tmp_path, monkeypatch) -> None:
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    lookups: list[str] = []
    original = SqliteEventLogStorage.has_table

    def counting(self, table_name: str) -> bool:
        lookups.append(table_name)
        return original(self, table_name)

    monkeypatch.setattr(SqliteEventLogStorage, "has_table", counting)
    for _ in range(3):
        assert storage.has_table("asset_event_tags")
        assert not storage.has_table("no_such_table")
    assert lookups == ["asset_event_tags", "no_such_table", "no_such_table", "no_such_table"]
    # A table created after a no is found at the next question (Dagster's migrations add tables).
    with storage.index_connection() as conn:
        conn.exec_driver_sql("create table no_such_table (x integer)")
    assert storage.has_table("no_such_table")
    # Events with partition tags still write them (the cached yes is the lookup's answer).
    specs = [(0, "materialization", 1, 2), (1, "planned", 0, 1), (0, "materialization", 2, None)]
    storage.store_event_batch([entry(i, *spec) for i, spec in enumerate(specs)])
    tags = shards(tmp_path)["index.db"]["asset_event_tags"]
    assert len(tags) == 2, tags


def test_an_asset_keys_column_that_exists_is_looked_up_once_and_a_missing_one_every_time(
    tmp_path, monkeypatch
) -> None:
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    lookups: list[str] = []
    original = SqliteEventLogStorage._has_asset_key_col_on_connection

    def counting(self, conn, column_name: str) -> bool:
        lookups.append(column_name)
        return original(self, conn, column_name)

    monkeypatch.setattr(SqliteEventLogStorage, "_has_asset_key_col_on_connection", counting)
    for _ in range(3):
        assert storage.has_asset_key_index_cols()
        assert not storage.has_asset_key_col("no_such_column")
    assert lookups == ["last_materialization_timestamp", *["no_such_column"] * 3]
    # A column added after a no is found at the next question (Dagster's migrations add columns).
    with storage.index_connection() as conn:
        conn.exec_driver_sql("alter table asset_keys add column no_such_column integer")
    assert storage.has_asset_key_col("no_such_column")
    # Materializations still update the asset's index columns (the cached yes is the lookup's answer).
    specs = [(0, "materialization", 1, 2), (0, "materialization", 2, None)]
    storage.store_event_batch([entry(i, *spec) for i, spec in enumerate(specs)])
    with sqlite3.connect(tmp_path / "index.db") as conn:
        rows = conn.execute("select last_materialization_timestamp from asset_keys").fetchall()
    assert rows and all(stamp is not None for (stamp,) in rows), rows
