"""Faults during a minute's ingestion, each ending with every record exactly once.

S3 down for a while (retried with backoff; the retry policy's own tests are in
test_object_store_retries.py) or for good (a clear failure), a warehouse write that fails
once (the step's retry policy), the Kafka broker stopped and restarted while the minute is read, and
the run's process killed with SIGKILL mid-minute and re-run. Each test ends by checking the raw table
row by row (one row per Kafka (partition, offset), exactly the producer's seqs) and the ingest group's
committed offsets. The services that are stopped here are dedicated to the test, on fixed ports, and
restarted on the same port and data folder, as an operator or a supervisor would.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.ingestion.assets import (
    kafka_quote_batch,
    raw_quote_object,
    raw_quote_table,
    stock_quotes_topic,
)
from stock_platform.object_keys import batch_manifest_key, raw_object_key
from stock_platform.partitions import minute_window
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import S3ObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse, WarehouseBusy
from stock_platform.services.kafka import KafkaBroker
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.process import free_port, port_open
from stock_platform.services.s3 import S3Server
from stock_platform_tests import kafka_topics
from stock_platform_tests.ingestion.ingest_helpers import (
    ASSETS,
    closed_minute,
    make_resources,
    produce,
    valid_messages,
)
from stock_platform_tests.kafka_topics import PAST_MINUTES, record_key

# ---------------------------------------------------------------------------------------------------
# helpers


def materialize(resources: dict, key: str, assets=ASSETS, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=key, resources=resources, **kwargs)


def in_thread(run) -> tuple[threading.Thread, dict]:
    """Start ``run()`` in a thread; the dict gets its "result" or "error"."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def step_events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def retries_by_step(result: dg.ExecuteInProcessResult) -> dict[str, list[str]]:
    """Per step, the error messages of the attempts that were retried."""
    retried: dict[str, list[str]] = {}
    for event in step_events(result, "STEP_UP_FOR_RETRY"):
        assert event.step_key is not None
        # The error is Dagster's RetryRequestedFromPolicy; what the step raised is its cause.
        messages: list[str] = []
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            messages.append(error.message)
            error = error.cause or error.context
        retried.setdefault(event.step_key, []).append("\n".join(messages))
    return retried


def table_facts(db_path: Path, key: str) -> tuple[int, int, list[int]]:
    """(rows, distinct (kafka_partition, kafka_offset), sorted producer seqs) of the minute."""
    if not db_path.exists():
        return 0, 0, []
    minute = minute_window(key)[0].replace(tzinfo=None)
    with duckdb.connect(str(db_path), read_only=True) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_name = 'bronze_stock_quotes_raw'"
        ).fetchone()
        if not tables or tables[0] == 0:
            return 0, 0, []
        rows, distinct = conn.execute(
            """select count(*), count(distinct (kafka_partition, kafka_offset))
               from main.bronze_stock_quotes_raw where minute = ?""",
            [minute],
        ).fetchone()  # type: ignore[misc]
        seqs = conn.execute(
            """select (v->'quote'->>'seq')::bigint from main.bronze_stock_quotes_raw
               where minute = ? order by 1""",
            [minute],
        ).fetchall()
    return rows, distinct, [s for (s,) in seqs]


def assert_exactly_once(resources: dict, tmp_path: Path, key: str, count: int, ends: dict[int, int]) -> None:
    """Every produced quote of the minute in the raw table once, and the group committed to its end."""
    assert table_facts(tmp_path / "warehouse.duckdb", key) == (count, count, list(range(count)))
    assert resources["kafka"].committed_offsets() == ends


def round_robin_ends(count: int, partitions: int = 2) -> dict[int, int]:
    """End offsets after ``valid_messages(key, count, partitions)`` into an empty topic."""
    return {p: len(range(p, count, partitions)) for p in range(partitions)}


def create_topic(bootstrap: str, partitions: int = 2) -> str:
    return kafka_topics.create_topic(bootstrap, "faults", partitions)


def produce_many(bootstrap: str, topic: str, messages: Iterable[tuple[int, int, bytes]]) -> None:
    """Like ingest_helpers.produce, for more messages than the producer's queue holds at once."""
    producer = kafka_topics.ordered_producer(bootstrap, **{"linger.ms": 20, "compression.type": "lz4"})
    for partition, timestamp_ms, value in messages:
        while True:
            try:
                producer.produce(
                    topic, value=value, key=record_key(value), partition=partition, timestamp=timestamp_ms
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


class DuckDBLockHolder:
    """Another process holding the DuckDB file's write lock, as a second writer or an open shell would."""

    def __init__(self, path: Path) -> None:
        code = (
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "c.execute('create table if not exists lock_probe (x int)'); "
            "print('locked', flush=True); sys.stdin.read(); c.close()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            assert self.proc.wait(30) == 0


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server this test may stop and restart (same port, data folder and keys)."""
    server = S3Server(tmp_path / "s3", port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A Kafka broker this test may stop and restart (same ports and data folder)."""
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


def s3_store(server: S3Server, **retry) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=f"raw-{uuid.uuid4().hex[:12]}",
        **retry,
    )


# ---------------------------------------------------------------------------------------------------
# S3 unavailable

OUTAGE_S = 5.0  # the mechanism is the same for a 30 s outage with the default retry_seconds=60


@pytest.mark.integration
def test_s3_outage_is_ridden_out_with_backoff(kafka_broker, own_s3, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(33)
    produce(bootstrap, topic, valid_messages(key, 30))
    store = s3_store(
        own_s3, retry_seconds=OUTAGE_S + 20, retry_backoff_seconds=0.2, retry_backoff_max_seconds=1
    )
    resources = make_resources(bootstrap, topic, tmp_path, object_store=store)

    own_s3.stop()
    assert not port_open("127.0.0.1", own_s3.port)
    started = time.monotonic()
    thread, outcome = in_thread(lambda: materialize(resources, key))
    time.sleep(OUTAGE_S)
    assert thread.is_alive(), f"the run ended while S3 was down: {outcome}"
    own_s3.start()  # same port, data folder and keys
    thread.join(60)

    assert "error" not in outcome and outcome["result"].success
    assert time.monotonic() - started >= OUTAGE_S
    # The store rode out the outage inside the step: no step-level retry was needed.
    assert retries_by_step(outcome["result"]) == {}
    assert_exactly_once(resources, tmp_path, key, 30, round_robin_ends(30))
    assert store.metadata(raw_object_key(topic, key))["rows"] == "30"


@pytest.mark.integration
def test_s3_that_stays_down_fails_clearly_and_commits_nothing(kafka_broker, own_s3, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(34)
    produce(bootstrap, topic, valid_messages(key, 12))
    store = s3_store(own_s3, retry_seconds=2, retry_backoff_seconds=0.2, retry_backoff_max_seconds=1)
    resources = make_resources(bootstrap, topic, tmp_path, object_store=store)
    own_s3.stop()

    started = time.monotonic()
    result = materialize(resources, key, raise_on_error=False)

    assert not result.success
    assert time.monotonic() - started < 10  # the window, not the step retry policy, bounds the wait
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "kafka_quote_batch"
    assert retries_by_step(result) == {}
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"S3 at 127.0.0.1:{own_s3.port} unreachable after ")
    assert " attempt(s) over 2." in description
    assert "Connection refused; check S3_ENDPOINT and that the server runs" in description
    assert resources["kafka"].committed_offsets() == {0: None, 1: None}
    assert table_facts(tmp_path / "warehouse.duckdb", key) == (0, 0, [])

    # Once S3 is back, running the minute again loses nothing.
    own_s3.start()
    materialize(resources, key)
    assert_exactly_once(resources, tmp_path, key, 12, round_robin_ends(12))


# ---------------------------------------------------------------------------------------------------
# warehouse write fails once

_LOCK_HOLDERS: dict[str, DuckDBLockHolder] = {}


class LockReleasedAfterFirstFailure(DuckDBWarehouse):
    """The real DuckDB warehouse; the other process lets go of the file once a load has failed on it."""

    def connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return super().connect()
        except WarehouseBusy:
            _LOCK_HOLDERS[self.path].release()
            raise


@pytest.mark.integration
def test_a_warehouse_write_that_fails_once_is_retried(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(35)
    produce(bootstrap, topic, valid_messages(key, 20))
    db_path = tmp_path / "warehouse.duckdb"
    warehouse = LockReleasedAfterFirstFailure(path=str(db_path), lock_wait_seconds=0.5)
    resources = make_resources(bootstrap, topic, tmp_path, warehouse=warehouse)
    _LOCK_HOLDERS[str(db_path)] = holder = DuckDBLockHolder(db_path)
    try:
        result = materialize(resources, key)
    finally:
        holder.release()
        del _LOCK_HOLDERS[str(db_path)]

    assert result.success
    retried = retries_by_step(result)
    assert list(retried) == ["raw_quote_table"] and len(retried["raw_quote_table"]) == 1
    assert (
        f"DuckDB file {db_path} stayed locked by another process for 0.5 s" in retried["raw_quote_table"][0]
    )
    [table] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "raw_quote_table"
    ]
    assert table.materialization.metadata["committed_offsets"].value == {"0": 10, "1": 10}
    assert_exactly_once(resources, tmp_path, key, 20, {0: 10, 1: 10})


# ---------------------------------------------------------------------------------------------------
# Kafka broker stopped and restarted


@pytest.mark.integration
def test_a_broker_restart_while_the_minute_is_read_is_retried(own_broker, tmp_path):
    bootstrap = own_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(36)
    produce(bootstrap, topic, valid_messages(key, 40))
    kafka = KafkaResource(
        bootstrap_servers=bootstrap,
        topic=topic,
        ingest_group=f"ingest-{topic}",
        timeout_seconds=2,
        **PAST_MINUTES,
    )
    resources = make_resources(bootstrap, topic, tmp_path, kafka=kafka)
    materialize(resources, key, assets=[stock_quotes_topic, kafka_quote_batch])  # the minute's batch

    own_broker.stop()
    thread, outcome = in_thread(
        lambda: materialize(resources, key, assets=ASSETS, selection=[raw_quote_object, raw_quote_table])
    )
    time.sleep(3)  # longer than timeout_seconds: the read stalls and the attempt fails
    own_broker.start()  # same ports and data folder
    thread.join(90)

    assert "error" not in outcome and outcome["result"].success
    retried = retries_by_step(outcome["result"])
    assert list(retried) == ["raw_quote_object"]
    # The first attempt's read stalled on the stopped broker (a later one may also have been too early).
    assert f"reading {topic} stalled for 2 s" in retried["raw_quote_object"][0]
    assert_exactly_once(resources, tmp_path, key, 40, {0: 20, 1: 20})

    # A full re-run of the minute after the restart reads the same records: nothing added or moved.
    materialize(resources, key)
    assert_exactly_once(resources, tmp_path, key, 40, {0: 20, 1: 20})


# ---------------------------------------------------------------------------------------------------
# the run's process killed (SIGKILL) mid-minute

RUN_MINUTE = """
import json, sys
import dagster as dg
from stock_platform.ingestion.assets import kafka_quote_batch, raw_quote_object, raw_quote_table, stock_quotes_topic
from stock_platform.resources.kafka import KafkaResource
from stock_platform.resources.object_store import LocalObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse

args = json.loads(sys.argv[1])
dg.materialize(
    [stock_quotes_topic, kafka_quote_batch, raw_quote_object, raw_quote_table],
    partition_key=args["key"],
    resources={
        "kafka": KafkaResource(
            bootstrap_servers=args["bootstrap"], topic=args["topic"], ingest_group=args["group"],
            require_log_append_time=False,
        ),
        "object_store": LocalObjectStore(root=args["lake"]),
        "warehouse": DuckDBWarehouse(path=args["db"]),
    },
)
"""


def start_run_process(resources: dict, key: str, tmp_path: Path) -> subprocess.Popen:
    kafka = resources["kafka"]
    args = {
        "key": key,
        "bootstrap": kafka.bootstrap_servers,
        "topic": kafka.topic,
        "group": kafka.ingest_group,
        "lake": resources["object_store"].root,
        "db": resources["warehouse"].path,
    }
    log = (tmp_path / "run.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-c", RUN_MINUTE, json.dumps(args)], cwd=PROJECT_ROOT, stdout=log, stderr=log
    )


def wait_for(condition, proc: subprocess.Popen, tmp_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, (
            f"the run ended before the kill: {(tmp_path / 'run.log').read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.01)


def kill_9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def lake_files(lake: Path) -> list[str]:
    """What a reader of the lake sees: every file outside the staging folder."""
    return sorted(
        str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file() and ".staging" not in p.parts
    )


@pytest.mark.integration
def test_a_run_killed_while_reading_the_minute_is_rerun_exactly_once(kafka_broker, tmp_path):
    count = 100_000  # large enough that the read takes a while; killed while the object is being built
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(37)
    produce_many(bootstrap, topic, valid_messages(key, count))
    resources = make_resources(bootstrap, topic, tmp_path)
    lake = tmp_path / "lake"

    proc = start_run_process(resources, key, tmp_path)
    wait_for(lambda: any((lake / ".staging").glob("*.raw.ndjson.gz")), proc, tmp_path)
    kill_9(proc)

    # Only the batch manifest is visible; the half-built object stays in the staging folder.
    assert lake_files(lake) == sorted(
        [batch_manifest_key(topic, key), batch_manifest_key(topic, key) + ".meta.json"]
    )
    assert resources["kafka"].committed_offsets() == {0: None, 1: None}
    assert table_facts(tmp_path / "warehouse.duckdb", key) == (0, 0, [])

    result = materialize(resources, key)

    assert result.success
    assert_exactly_once(resources, tmp_path, key, count, round_robin_ends(count))
    lines = gzip.decompress((lake / raw_object_key(topic, key)).read_bytes()).splitlines()
    assert len(lines) == count


@pytest.mark.integration
def test_a_run_killed_between_object_and_table_is_rerun_exactly_once(kafka_broker, tmp_path):
    count = 500
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)
    key = closed_minute(38)
    produce(bootstrap, topic, valid_messages(key, count))
    resources = make_resources(bootstrap, topic, tmp_path)
    lake, db_path = tmp_path / "lake", tmp_path / "warehouse.duckdb"
    object_path = lake / raw_object_key(topic, key)

    # Holding the warehouse's lock stops the run at the load, so the kill lands after the object is
    # published and before the table has the minute, every time.
    holder = DuckDBLockHolder(db_path)
    try:
        proc = start_run_process(resources, key, tmp_path)
        wait_for(object_path.exists, proc, tmp_path)
        time.sleep(0.5)  # the run is now waiting for the lock
        kill_9(proc)
    finally:
        holder.release()

    assert len(gzip.decompress(object_path.read_bytes()).splitlines()) == count  # published whole
    assert resources["kafka"].committed_offsets() == {0: None, 1: None}
    assert table_facts(db_path, key) == (0, 0, [])

    result = materialize(resources, key)

    assert result.success
    assert_exactly_once(resources, tmp_path, key, count, round_robin_ends(count))
