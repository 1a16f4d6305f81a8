"""A 30-day soak of the Dagster instance history under the history purge (issue 12, part 4).

The platform's lag sensor starts one minute_pipeline_job run a minute (1,440 a day), a dbt_tests_job run
every DBT_TESTS_EVERY_MINUTES minutes, records its lag observation and 3 check evaluations once a minute
(runless events, run id "") and ticks every ~5 s. This script writes that history for N simulated days
into a real Dagster instance, on SQLite and on a real local PostgreSQL, runs
``stock_platform.orchestration.purge.purge_history`` (and the sensor daemon's own tick retention) at the
end of each simulated day, and prints what an operator cares about: instance size, purge speed, the lag
sensor's instance queries, the cold partition-status-cache rebuild, and an independent count of orphans.

How the history is written (bulk, with backdated timestamps):
- Everything is copied from a real instance made by
  ``STOCK_PLATFORM_HOME=/tmp/sp_cap DBT_TESTS_EVERY_MINUTES=2 ./scripts/run.sh --minutes 4 --no-dashboard``
  (``--capture`` names another home):
  its newest successful minute run (events, asset-event tags, asset-check executions, run row and tags,
  compute-log files), the sensor's newest runless observation and check evaluations, and its ticks.
  The copy is done on the serialized text: every run id, minute key, epoch time and storage id in an
  event's JSON is rewritten for the copy (one regular expression; ``Shift``), which is ~50x faster than
  deserializing, ``_replace``-ing and re-serializing each event, and rewrites the nested copies as well
  (logging tags, check targets, partition subsets, input event pointers).
- A minute run that still carries dbt's tests (captures made before they moved to dbt_tests_job) loses
  its dbt step's check events (the per-run budget is printed before and after). dbt_tests_job runs are
  copies of the capture's newest real one (hence DBT_TESTS_EVERY_MINUTES=2 in the capture, so that it
  has one), their range tags moved to each copy's DBT_TESTS_EVERY_MINUTES minutes; a capture without one
  makes them from the minute run's dbt-step check events instead. ~1 % of runs fail: a copy cut after its last step's start,
  with a STEP_FAILURE and a RUN_FAILURE event (built from the run's own success events).
- Rows go into the storages' own SQLAlchemy tables with executemany, with explicit event ids (other
  rows and other events' JSON refer to them; the Postgres sequences are moved past them afterwards). On
  SQLite each run also gets its shard file (a copy of an empty shard Dagster created, filled with
  sqlite3), and events are mirrored into the index shard exactly as ``SqliteEventLogStorage.store_event``
  mirrors them. ``asset_keys`` (last materialization, last run, last event time) is then brought up to
  date through the storage's own ``store_asset_event`` with each asset's newest events of each kind,
  which is what storing every event one by one would have left there.
- Ticks go into the schedule storage's table (12 a run-minute: 11 skipped, 1 requesting the run), each
  with its local tick log file (mtime backdated); the daemon's tick retention runs each simulated day as
  ``SensorLaunchContext`` runs it (``instance.purge_ticks`` per retention period in dagster.yaml).

Day 1 starts at UTC midnight ``days + outage-days`` days before today, so purges run with ``now`` at the
end of each simulated day and the retention cutoffs fall where they would in production.

    .venv/bin/python benchmarks/history_soak.py [--days 30] [--storage sqlite|postgres|both]
        [--runs-per-day 1440] [--quick] [--outage-days 0] [--workdir DIR] [--json PATH]

Exit code 0 even when a criterion fails (it is a benchmark); the summary says PASS or FAIL per criterion.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

import dagster as dg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402
from bench_common import percentile  # noqa: E402
from dagster._core.definitions.run_request import InstigatorType  # noqa: E402
from dagster._core.events import (  # noqa: E402
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEventType,
    JobFailureData,
)
from dagster._core.events.log import EventLogEntry  # noqa: E402
from dagster._core.execution.plan.objects import StepFailureData  # noqa: E402
from dagster._core.storage.event_log.schema import (  # noqa: E402
    AssetCheckExecutionsTable,
    AssetEventTagsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.partition_status_cache import (  # noqa: E402
    get_and_update_asset_status_cache_value,
)
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable, SnapshotsTable  # noqa: E402
from dagster._core.storage.schedules.schema import InstigatorsTable, JobTable, JobTickTable  # noqa: E402
from dagster._serdes import deserialize_value, serialize_value  # noqa: E402
from dagster._utils.error import SerializableErrorInfo  # noqa: E402

from stock_platform.orchestration.checks import freshness_evaluations  # noqa: E402
from stock_platform.orchestration.purge import RetentionPolicy, purge_history  # noqa: E402
from stock_platform.orchestration.sensors import SENSOR_NAME, previous_run  # noqa: E402
from stock_platform.partitions import (  # noqa: E402
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_minute_partitions,
    minute_key,
    minute_window,
    run_minute_range,
)
from stock_platform.settings import Settings  # noqa: E402

DEFAULT_CAPTURE = Path("/tmp/sp_cap/dagster_home")
MINUTE_JOB = "minute_pipeline_job"
TESTS_JOB = "dbt_tests_job"
DBT_STEP = "stock_dbt_models"
TESTS_EVERY = int(Settings.model_fields["dbt_tests_every_minutes"].default)
POLICY = RetentionPolicy(
    success_days=Settings.model_fields["history_success_days"].default,
    failure_days=Settings.model_fields["history_failure_days"].default,
    runless_days=Settings.model_fields["history_runless_days"].default,
)
# The partitions window the UI lists (partitions.py): UTC midnight this many days before today.
WINDOW_DAYS = Settings.model_fields["history_success_days"].default
TICKS_PER_MINUTE = 12  # Dagster's sensor daemon loop: every 5 s
TICK_EVERY_S = 5
FAILURE_EVERY = 100  # ~1 % of runs fail: the minute runs numbered 37, 137, ... and tests runs 50, 150, ...
FAILED_MINUTE_RUN = 37
FAILED_TESTS_RUN = 50
DAY = dt.timedelta(days=1)
GIB = 1024**3
MIB = 1024**2

# Events SqliteEventLogStorage.store_event mirrors into its index shard (the rest stay in the run's shard).
MIRRORED = {t.value for t in (*ASSET_EVENTS, *ASSET_CHECK_EVENTS, *EVENT_TYPE_TO_PIPELINE_RUN_STATUS)}
CHECK_TYPES = {
    DagsterEventType.ASSET_CHECK_EVALUATION.value,
    DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
}
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy writes DateTime columns into SQLite


def naive(epoch: float) -> dt.datetime:
    """The tables store naive UTC datetimes."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


# --- Copying serialized text ------------------------------------------------------------------------

# Everything in a captured run's JSON that must differ in a copy: check targets' and input pointers'
# storage ids, run ids, minute keys, and epoch times (event times, partition time windows).
_TOKENS = re.compile(
    r'(?P<sid>"storage_id": |"dagster/input_event_pointer/[^"]*": ")(?P<sid_value>\d+)'
    r"|(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"|(?P<minute>\d{4}-\d{2}-\d{2}-\d{2}:\d{2})"
    r"|(?<![\w.])(?P<epoch>1\d{9}\.\d+)(?![\w.])"
)


@dataclass
class Shift:
    """How a copy differs from the captured text: ``delta_s`` later, other run ids and storage ids, and
    another partitions-definition start. Epoch values outside ``window`` (two days around the capture)
    are data, not times of the run, and stay."""

    delta_s: float
    window: tuple[float, float]
    def_start: tuple[str, str]
    runs: dict[str, str] = field(default_factory=dict)
    ids: dict[int, int] = field(default_factory=dict)
    _minutes: dict[str, str] = field(default_factory=dict)

    def _sub(self, m: re.Match[str]) -> str:
        if (prefix := m.group("sid")) is not None:
            old = int(m.group("sid_value"))
            return prefix + str(self.ids.get(old, old))
        if (run := m.group("uuid")) is not None:
            return self.runs.get(run, run)
        if (key := m.group("minute")) is not None:
            return self.minute(key)
        epoch = m.group("epoch")
        if epoch == self.def_start[0]:
            return self.def_start[1]
        value = float(epoch)
        return repr(value + self.delta_s) if self.window[0] <= value <= self.window[1] else epoch

    def minute(self, key: str) -> str:
        if key not in self._minutes:
            self._minutes[key] = minute_key(minute_window(key)[0] + dt.timedelta(seconds=self.delta_s))
        return self._minutes[key]

    def render(self, text: str) -> str:
        return _TOKENS.sub(self._sub, text)


# --- The capture ------------------------------------------------------------------------------------


@dataclass
class Event:
    text: str
    ts: float
    type: str | None
    step_key: str | None
    asset_key: str | None
    partition: str | None
    orig_id: int | None  # its id in the capture's index (what other rows and events refer to)

    def entry(self) -> EventLogEntry:
        return deserialize_value(self.text, EventLogEntry)


@dataclass
class CheckRow:
    """An asset_check_executions row as Dagster left it for the captured run."""

    asset_key: str
    check_name: str
    partition: str | None
    status: str
    event: int  # index of the event stored as its evaluation_event
    materialization: int | None  # captured storage id of the materialization it targets


@dataclass
class TagRow:
    event: int
    asset_key: str
    key: str
    value: str


@dataclass
class Template:
    """One captured run (or the runless events of one minute), and how to copy it."""

    name: str
    job: str
    status: str
    run_id: str
    minute: float  # epoch start of the captured minute the run is for
    events: list[Event]
    checks: list[CheckRow]
    tags: list[TagRow]
    created: float = 0.0
    real: bool = False  # a captured dbt_tests_job run, not one made from a minute run's dbt step

    def keep(self, indexes: list[int], name: str) -> Template:
        where = {old: new for new, old in enumerate(indexes)}
        return replace(
            self,
            name=name,
            events=[self.events[i] for i in indexes],
            checks=[replace(c, event=where[c.event]) for c in self.checks if c.event in where],
            tags=[replace(t, event=where[t.event]) for t in self.tags if t.event in where],
        )

    @property
    def budget(self) -> tuple[int, int]:
        return len(self.events), sum(len(e.text) for e in self.events)

    @property
    def materialized(self) -> list[str]:
        return sorted({e.asset_key for e in self.events if e.type == "ASSET_MATERIALIZATION" and e.asset_key})


@dataclass
class Capture:
    home: Path
    full: Template
    minute: Template
    minute_failed: Template
    tests: Template
    tests_failed: Template
    runless: Template
    run_row: dict[str, Any]
    run_tags: dict[str, str]
    snapshots: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    instigators: list[dict[str, Any]]
    tick_success: dict[str, Any]
    tick_skipped: dict[str, Any]
    tick_log: bytes
    compute_logs: list[tuple[str, bytes]]
    def_start: float
    window: tuple[float, float]
    partitioned_keys: list[str]


def _rows(conn: sqlite3.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn.row_factory = sqlite3.Row
    return [dict(row) for row in conn.execute(sql, args)]


def _epoch(text: str) -> float:
    return dt.datetime.strptime(text, SQLITE_TIME).replace(tzinfo=dt.UTC).timestamp()


def _read_events(
    shard: sqlite3.Connection, index: sqlite3.Connection, run_id: str, where: str = "1=1"
) -> tuple[list[Event], list[TagRow], list[CheckRow]]:
    rows = _rows(shard, f"SELECT * FROM event_logs WHERE {where} ORDER BY id")
    # The same serialized text went into the run's shard and (for mirrored events) into the index.
    index_ids = {
        r["event"]: r["id"] for r in _rows(index, "SELECT id, event FROM event_logs WHERE run_id = ?", run_id)
    }
    events = [
        Event(
            text=r["event"],
            ts=deserialize_value(r["event"], EventLogEntry).timestamp,
            type=r["dagster_event_type"],
            step_key=r["step_key"],
            asset_key=r["asset_key"],
            partition=r["partition"],
            orig_id=index_ids.get(r["event"]),
        )
        for r in rows
    ]
    position = {e.orig_id: i for i, e in enumerate(events) if e.orig_id is not None}
    ids = ",".join(str(i) for i in position) or "NULL"
    tags = [
        TagRow(position[r["event_id"]], r["asset_key"], r["key"], r["value"])
        for r in _rows(index, f"SELECT * FROM asset_event_tags WHERE event_id IN ({ids}) ORDER BY id")
    ]
    checks = [
        CheckRow(
            r["asset_key"],
            r["check_name"],
            r["partition"],
            r["execution_status"],
            position[r["evaluation_event_storage_id"]],
            r["materialization_event_storage_id"],
        )
        for r in _rows(
            index,
            f"SELECT * FROM asset_check_executions WHERE evaluation_event_storage_id IN ({ids}) ORDER BY id",
        )
    ]
    return events, tags, checks


def _output_name(event: Event) -> str | None:
    if event.type != "STEP_OUTPUT":
        return None
    return event.entry().get_dagster_event().step_output_data.output_name


def _failed(template: Template, name: str) -> Template:
    """The run cut after its last step's start, which fails: STEP_FAILURE, then RUN_FAILURE."""
    events = template.events
    last_start = max(i for i, e in enumerate(events) if e.type == "STEP_START")
    step = events[last_start].step_key
    step_success = next(e for e in events if e.type == "STEP_SUCCESS" and e.step_key == step).entry()
    run_success = next(e for e in events if e.type == "PIPELINE_SUCCESS").entry()
    exited = events[-1]  # "Process for run exited"
    error = SerializableErrorInfo(
        message="dagster_dbt.errors.DagsterDbtCliRuntimeError: the dbt command failed (soak benchmark)\n",
        stack=[],
        cls_name="DagsterDbtCliRuntimeError",
    )
    at = events[last_start].ts + 0.5
    step_event = step_success.get_dagster_event()._replace(
        event_type_value="STEP_FAILURE",
        event_specific_data=StepFailureData(error=error, user_failure_data=None),
        message=f'Execution of step "{step}" failed.',
    )
    step_failure = step_success._replace(
        dagster_event=step_event, timestamp=at, level=logging.ERROR, user_message=step_event.message
    )
    run_event = run_success.get_dagster_event()._replace(
        event_type_value="PIPELINE_FAILURE",
        event_specific_data=JobFailureData(error=None),
        message=f"Execution of run for \"{template.job}\" failed. Steps failed: ['{step}'].",
    )
    run_failure = run_success._replace(
        dagster_event=run_event, timestamp=at + 0.05, level=logging.ERROR, user_message=run_event.message
    )
    kept = template.keep(list(range(last_start + 1)), name)
    made = [
        Event(serialize_value(step_failure), at, "STEP_FAILURE", step, None, None, None),
        Event(serialize_value(run_failure), at + 0.05, "PIPELINE_FAILURE", None, None, None, None),
        replace(exited, ts=at + 0.1, text=exited.text.replace(repr(exited.ts), repr(at + 0.1)), orig_id=None),
    ]
    return replace(kept, status="FAILURE", events=[*kept.events, *made])


def _newest_run(
    runs: sqlite3.Connection, index: sqlite3.Connection, history: Path, job: str, name: str
) -> tuple[dict[str, Any], dict[str, str], Template] | None:
    """The capture's newest successful run of ``job``: its row, its tags and its events as a template."""
    found = _rows(
        runs,
        "SELECT * FROM runs WHERE pipeline_name = ? AND status = 'SUCCESS' ORDER BY id DESC LIMIT 1",
        job,
    )
    if not found:
        return None
    row = found[0]
    run_id = row["run_id"]
    tags = {r["key"]: r["value"] for r in _rows(runs, "SELECT * FROM run_tags WHERE run_id = ?", run_id)}
    first_minute = minute_window(run_minute_range(tags)[0])[0].timestamp()  # type: ignore[index]
    events, event_tags, checks = _read_events(
        sqlite3.connect(history / "runs" / f"{run_id}.db"), index, run_id
    )
    template = Template(
        name, job, "SUCCESS", run_id, first_minute, events, tags=event_tags, checks=checks,
        created=_epoch(row["create_timestamp"]),
    )  # fmt: skip
    return row, tags, template


def _tests_from_minute_run(full: Template, outputs: list[str | None], model_outputs: set[str]) -> Template:
    """A dbt_tests_job run made from a minute run that still carries dbt's tests: the run's own events
    and the dbt step's, without the models' materializations."""
    keep = [
        i
        for i, e in enumerate(full.events)
        if e.step_key is None
        or (
            e.step_key == DBT_STEP
            and e.type not in ("ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED")
            and not (e.type == "STEP_OUTPUT" and outputs[i] in model_outputs)
        )
    ]
    tests = full.keep(keep, "tests")
    return replace(
        tests,
        job=TESTS_JOB,
        events=[replace(e, text=e.text.replace(f'"{MINUTE_JOB}"', f'"{TESTS_JOB}"')) for e in tests.events],
    )


def read_capture(home: Path) -> Capture:
    history = home / "history"
    runs = sqlite3.connect(history / "runs.db")
    index = sqlite3.connect(history / "runs" / "index.db")
    newest = _newest_run(runs, index, history, MINUTE_JOB, "captured")
    if newest is None:
        sys.exit(f"the capture at {home} has no successful {MINUTE_JOB} run")
    run_row, run_tags, full = newest
    run_id, events = full.run_id, full.events

    # The minute run now: without dbt's tests (their planned and evaluation events, and the checks' step
    # outputs: every output of the dbt step that is not one of its models).
    models = {e.asset_key for e in events if e.step_key == DBT_STEP and e.type == "ASSET_MATERIALIZATION"}
    model_outputs = {json.loads(k)[-1] for k in models if k}
    outputs = [_output_name(e) for e in events]
    dbt_tests = [
        e.step_key == DBT_STEP
        and (e.type in CHECK_TYPES or (e.type == "STEP_OUTPUT" and outputs[i] not in model_outputs))
        for i, e in enumerate(events)
    ]
    minute_t = full.keep([i for i, drop in enumerate(dbt_tests) if not drop], "minute")
    # dbt_tests_job: a copy of the capture's real one (DBT_TESTS_EVERY_MINUTES=2 in the capture command).
    captured_tests = _newest_run(runs, index, history, TESTS_JOB, "tests")
    if captured_tests is not None:
        tests_t = replace(captured_tests[2], real=True)
    else:
        tests_t = _tests_from_minute_run(full, outputs, model_outputs)

    # The lag sensor's newest report: one observation and the check evaluations after it.
    runless_shard = sqlite3.connect(history / "runs" / ".db")
    last_obs = runless_shard.execute(
        "SELECT max(id) FROM event_logs WHERE dagster_event_type = 'ASSET_OBSERVATION'"
    ).fetchone()[0]
    r_events, r_tags, r_checks = _read_events(
        runless_shard,
        index,
        "",
        f"id >= {last_obs} AND dagster_event_type IN ('ASSET_OBSERVATION', 'ASSET_CHECK_EVALUATION')",
    )
    r_minute = r_events[0].ts // 60 * 60
    runless = Template("runless", "", "", "", r_minute, r_events, tags=r_tags, checks=r_checks)

    schedules = sqlite3.connect(home / "schedules" / "schedules.db")
    jobs = _rows(schedules, "SELECT * FROM jobs")
    instigators = _rows(schedules, "SELECT * FROM instigators")
    lag_ticks = [
        r
        for r in _rows(schedules, "SELECT * FROM job_ticks ORDER BY id DESC")
        if json.loads(r["tick_body"]).get("job_name") == SENSOR_NAME
    ]
    tick_success = next(r for r in lag_ticks if r["status"] == "SUCCESS" and run_id in r["tick_body"])
    tick_skipped = next(
        r for r in lag_ticks if r["status"] == "SKIPPED" and json.loads(r["tick_body"])["log_key"]
    )
    tick_log_dir = home / "storage" / "__repository__" / SENSOR_NAME
    log_file = tick_log_dir / f"{tick_skipped['id']}.err"
    tick_log = log_file.read_bytes() if log_file.exists() else next(tick_log_dir.glob("*.err")).read_bytes()
    logs_dir = home / "storage" / run_id / "compute_logs"
    compute_logs = [(p.name, p.read_bytes()) for p in sorted(logs_dir.iterdir()) if p.is_file()]

    body = run_row["run_body"]
    def_start = float(
        re.search(r'"partitions_def": \{.*?"start": \{[^}]*"timestamp": ([\d.]+)', body).group(1)
    )  # type: ignore[union-attr]
    partitioned = sorted(
        {e.asset_key for e in minute_t.events if e.type == "ASSET_MATERIALIZATION" and e.partition}
    )
    return Capture(
        home=home,
        full=full,
        minute=minute_t,
        minute_failed=_failed(minute_t, "minute_failed"),
        tests=tests_t,
        tests_failed=_failed(tests_t, "tests_failed"),
        runless=runless,
        run_row=run_row,
        run_tags=run_tags,
        snapshots=_rows(runs, "SELECT snapshot_id, snapshot_body, snapshot_type FROM snapshots"),
        jobs=jobs,
        instigators=instigators,
        tick_success=tick_success,
        tick_skipped=tick_skipped,
        tick_log=tick_log,
        compute_logs=compute_logs,
        def_start=def_start,
        window=(full.minute - 2 * 86400, full.minute + 2 * 86400),
        partitioned_keys=partitioned,
    )


# --- Instances --------------------------------------------------------------------------------------


def write_instance_yaml(capture: Capture, home: Path, storage: dict[str, Any] | None) -> None:
    """The captured instance's settings (run queue, retention: the daemon's tick retention reads it);
    no run launcher, nothing is launched here."""
    config = yaml.safe_load((capture.home / "dagster.yaml").read_text()) or {}
    config.pop("run_launcher", None)
    if storage:
        config["storage"] = storage
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class Target:
    name: str
    home: Path
    instance: dg.DagsterInstance
    sqlite: bool
    pg: Any = None  # the PostgresServer

    def pg_connect(self) -> Any:
        import psycopg2  # noqa: PLC0415

        conn = psycopg2.connect(**self.pg.connection_kwargs())
        conn.autocommit = True
        return conn


@contextlib.contextmanager
def open_target(name: str, workdir: Path, capture: Capture) -> Iterator[Target]:
    home = workdir / name / "dagster_home"
    if home.exists():
        shutil.rmtree(home)
    if name == "sqlite":
        write_instance_yaml(capture, home, None)
        yield Target(name, home, dg.DagsterInstance.from_config(str(home)), sqlite=True)
        return
    from stock_platform.services.postgres import PostgresServer  # noqa: PLC0415

    server = PostgresServer(workdir / name / "server").start()
    try:
        storage = {
            "postgres": {
                "postgres_db": {
                    "hostname": server.host,
                    "port": server.port,
                    "username": server.user,
                    "password": server.password,
                    "db_name": server.db,
                    "scheme": "postgresql+psycopg2",  # as docker/dagster.yaml: the driver the image has
                }
            }
        }
        write_instance_yaml(capture, home, storage)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield Target(name, home, instance, sqlite=False, pg=server)
        finally:
            instance.dispose()
    finally:
        server.stop()


# --- Bulk load --------------------------------------------------------------------------------------


def _copied(row: dict[str, Any]) -> dict[str, Any]:
    """A captured row for another database: without its id, datetimes parsed (SQLite stores text)."""
    out = {k: v for k, v in row.items() if k != "id"}
    for k, v in out.items():
        if k.endswith("timestamp") and isinstance(v, str):
            out[k] = dt.datetime.fromisoformat(v)
    return out


@dataclass
class Pending:
    runs: list[dict[str, Any]] = field(default_factory=list)
    run_tags: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the index (SQLite) or the one table
    runless_shard: list[dict[str, Any]] = field(default_factory=list)  # SQLite's "" shard
    event_tags: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    ticks: list[dict[str, Any]] = field(default_factory=list)


class Loader:
    """Writes copies of the captured history into one instance (see the module docstring)."""

    def __init__(self, target: Target, capture: Capture, manifest: Path) -> None:
        self.t = target
        self.c = capture
        self.storage: Any = target.instance.event_log_storage
        self.pending = Pending()
        self.manifest = manifest.open("a")
        self.latest_asset_events: dict[tuple[str, str], tuple[int, str]] = {}
        self.minute_ids: dict[int, int] = {}  # the newest minute run's copies of captured storage ids
        self.counts: dict[str, int] = defaultdict(int)
        self.seq = 0
        self.logs_dir = target.home / "storage"
        self.tick_logs = self.logs_dir / "__repository__" / SENSOR_NAME
        self.tick_logs.mkdir(parents=True, exist_ok=True)
        self.shards = Path(self.storage._base_dir) if target.sqlite else None
        with self.storage.index_connection() as conn:
            top = conn.execute(sa.select(sa.func.max(SqlEventLogStorageTable.c.id))).scalar()
        self.next_event_id = (top or 0) + 1
        self.next_tick_id = 1
        self.day = 0
        self._setup()

    def _setup(self) -> None:
        """Snapshots the copied run bodies refer to, the sensors' state, and (SQLite) an empty shard."""
        with self.t.instance.run_storage.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(SnapshotsTable.insert(), self.c.snapshots)
        with self.t.instance.schedule_storage.connect() as conn:  # type: ignore[union-attr]
            conn.execute(JobTable.insert(), [_copied(r) for r in self.c.jobs])
            if self.c.instigators:
                conn.execute(InstigatorsTable.insert(), [_copied(r) for r in self.c.instigators])
        if self.shards is not None:
            name = f"soak-template-{uuid.uuid4().hex}"
            with self.storage.run_connection(name):
                pass  # Dagster creates the shard: schema, WAL mode, alembic stamp
            path = self.shards / f"{name}.db"
            self.shard_template = path.read_bytes()
            path.unlink()  # the purge would count any non-run shard as an orphan
            with self.storage.run_connection(""):
                pass

    def _ids(self, template: Template) -> list[int | None]:
        """Event ids in the index (SQLite: mirrored events only) or in Postgres' one table."""
        ids: list[int | None] = []
        for e in template.events:
            if self.t.sqlite and e.type not in MIRRORED:
                ids.append(None)
                continue
            ids.append(self.next_event_id)
            self.next_event_id += 1
        return ids

    def _shift(self, template: Template, start: float, runs: dict[str, str], def_start: float) -> Shift:
        return Shift(
            delta_s=start - template.minute,
            window=self.c.window,
            def_start=(repr(self.c.def_start), repr(def_start)),
            runs=runs,
        )

    def _events(
        self,
        template: Template,
        run_id: str,
        shift: Shift,
        expand: list[str] | None = None,
        post: Callable[[str], str] | None = None,
    ) -> tuple[list[str], list[float], list[int | None]]:
        ids = self._ids(template)
        shift.ids = {**self.minute_ids, **{e.orig_id: i for e, i in zip(template.events, ids, strict=True) if e.orig_id and i}}  # fmt: skip
        texts = [shift.render(e.text) for e in template.events]
        if post is not None:
            texts = [post(t) for t in texts]
        times = [e.ts + shift.delta_s for e in template.events]
        rows = []
        for e, text, ts, event_id in zip(template.events, texts, times, ids, strict=True):
            row = {
                "run_id": run_id,
                "event": text,
                "dagster_event_type": e.type,
                "timestamp": naive(ts),
                "step_key": e.step_key,
                "asset_key": e.asset_key,
                "partition": shift.minute(e.partition) if e.partition else None,
            }
            rows.append(row)
            if event_id is not None:
                self.pending.events.append({**row, "id": event_id})
                if e.asset_key and e.type in (
                    "ASSET_MATERIALIZATION",
                    "ASSET_MATERIALIZATION_PLANNED",
                    "ASSET_OBSERVATION",
                ):
                    self.latest_asset_events[(e.asset_key, e.type)] = (event_id, text)  # fmt: skip
        if self.shards is not None:
            if run_id:
                self._write_shard(run_id, rows)
            else:
                self.pending.runless_shard += rows
        for tag in template.tags:
            value = tag.value
            if tag.key.startswith("dagster/input_event_pointer/"):
                value = str(shift.ids.get(int(value), value))
            self.pending.event_tags.append(
                {"event_id": ids[tag.event], "asset_key": tag.asset_key, "key": tag.key,
                 "value": shift.render(value), "event_timestamp": naive(times[tag.event])}
            )  # fmt: skip
        for check in template.checks:
            materialization = shift.ids.get(check.materialization) if check.materialization else None
            partitions: list[str | None] = [shift.minute(check.partition) if check.partition else None]
            if expand and check.status == "PLANNED" and check.partition:
                partitions = list(expand)  # one PLANNED row per minute of the planned subset
            for partition in partitions:
                self.pending.checks.append(
                    {"asset_key": check.asset_key, "check_name": check.check_name, "partition": partition,
                     "run_id": run_id, "execution_status": check.status, "evaluation_event": texts[check.event],
                     "evaluation_event_timestamp": naive(times[check.event]),
                     "evaluation_event_storage_id": ids[check.event],
                     "materialization_event_storage_id": materialization,
                     # Inserted by the database when live: what the purge's runless bound reads.
                     "create_timestamp": naive(times[check.event])}
                )  # fmt: skip
        self.counts["events"] += len(rows)
        return texts, times, ids

    def _write_shard(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        assert self.shards is not None
        path = self.shards / f"{run_id}.db"
        path.write_bytes(self.shard_template)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO event_logs (run_id, event, dagster_event_type, timestamp, step_key, asset_key, "
                "partition) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r["run_id"], r["event"], r["dagster_event_type"], r["timestamp"].strftime(SQLITE_TIME),
                  r["step_key"], r["asset_key"], r["partition"]) for r in rows],
            )  # fmt: skip
            conn.execute("COMMIT")
        finally:
            conn.close()

    def run(
        self, template: Template, run_id: str, start: float, tick_id: int, def_start: float, keys: list[str]
    ) -> None:
        """One run of the minute starting at ``start`` (or, for dbt_tests_job, of the minutes ``keys``)."""
        tests = template.job == TESTS_JOB
        shift = self._shift(template, start, {self.c.full.run_id: run_id, template.run_id: run_id}, def_start)
        post = None
        if tests and not template.real:
            # The copied one-minute subset of the checks' planned events becomes the tests' range.
            one, rng = self._subsets(def_start, start, keys)
            post = lambda text: text.replace(one, rng)  # noqa: E731
        _texts, times, _ = self._events(template, run_id, shift, keys if post else None, post)
        if not tests:
            self.minute_ids = dict(shift.ids)
        tags = {k: shift.render(v) for k, v in self.c.run_tags.items()}
        tags["dagster/tick"] = str(tick_id)
        body = shift.render(self.c.run_row["run_body"])
        status = template.status
        if tests:
            for key in (PARTITION_TAG, "dagster/partition_set"):
                tags.pop(key, None)
            tags.update({RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1], "stock_platform/ingest": "tests",
                         "dagster/run_key": f"{TESTS_JOB}:{keys[0]}...{keys[-1]}"})  # fmt: skip
            run = deserialize_value(body, dg.DagsterRun)
            run = run._replace(
                job_name=TESTS_JOB, tags=tags, status=dg.DagsterRunStatus(status), job_snapshot_id=None,
                execution_plan_snapshot_id=None, partitions_subset=None,
                remote_job_origin=run.remote_job_origin._replace(job_name=TESTS_JOB) if run.remote_job_origin else None,
                job_code_origin=run.job_code_origin._replace(job_name=TESTS_JOB) if run.job_code_origin else None,
            )  # fmt: skip
            body = serialize_value(run)
        else:
            body = re.sub(r'"dagster/tick": "\d+"', f'"dagster/tick": "{tick_id}"', body)
            body = body.replace("RunStatus.SUCCESS", f"RunStatus.{status}")
        kinds = {e.type: ts for e, ts in zip(template.events, times, strict=True)}
        end = kinds.get("PIPELINE_SUCCESS") or kinds["PIPELINE_FAILURE"]
        row = dict(self.c.run_row)
        row.pop("id")
        row.update(
            run_id=run_id, pipeline_name=template.job, status=status, run_body=body,
            partition=None if tests else tags.get(PARTITION_TAG),
            partition_set=None if tests else row.get("partition_set"),
            snapshot_id=None if tests else row.get("snapshot_id"),
            create_timestamp=naive(self.c.full.created + shift.delta_s), update_timestamp=naive(end),
            start_time=kinds["PIPELINE_START"], end_time=end,
        )  # fmt: skip
        self.pending.runs.append(row)
        self.pending.run_tags += [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()]
        folder = self.logs_dir / run_id / "compute_logs"
        folder.mkdir(parents=True)
        for name, data in self.c.compute_logs:
            (folder / name).write_bytes(data)
        self.seq += 1
        self.manifest.write(
            json.dumps({"run_id": run_id, "job": template.job, "status": status, "seq": self.seq, "update_ts": end,
                        "materialized": template.materialized, "day": self.day}) + "\n"
        )  # fmt: skip
        self.counts["runs"] += 1

    def _subsets(self, def_start: float, start: float, keys: list[str]) -> tuple[str, str]:
        pdef = build_minute_partitions(dt.datetime.fromtimestamp(def_start, dt.UTC))
        one = serialize_value(
            pdef.subset_with_partition_keys([minute_key(dt.datetime.fromtimestamp(start, dt.UTC))])
        )
        return one, serialize_value(pdef.subset_with_partition_keys(keys))

    def runless(self, start: float, def_start: float) -> None:
        self._events(self.c.runless, "", self._shift(self.c.runless, start, {}, def_start))

    def ticks(self, start: float, run_id: str, def_start: float) -> int:
        """The minute's ticks: 11 skipped, then the one that requests its run (returns that one's id)."""
        success_at = self.c.tick_success
        captured_end = self.c.full.minute + 60
        offset = _epoch(success_at["timestamp"]) - captured_end  # how long before the close it ticks
        times = [start + 60 + offset - TICK_EVERY_S * k for k in range(TICKS_PER_MINUTE - 1, -1, -1)]
        for n, at in enumerate(times):
            tick_id = self.next_tick_id
            self.next_tick_id += 1
            template = self.c.tick_success if n == len(times) - 1 else self.c.tick_skipped
            shift = Shift(
                delta_s=at - _epoch(template["timestamp"]), window=self.c.window,
                def_start=(repr(self.c.def_start), repr(def_start)), runs={self.c.full.run_id: run_id},
            )  # fmt: skip
            body = shift.render(template["tick_body"])
            body = re.sub(rf'"{SENSOR_NAME}", "\d+"\]', f'"{SENSOR_NAME}", "{tick_id}"]', body)
            row = dict(template)
            row.update(id=tick_id, tick_body=body, timestamp=naive(at), create_timestamp=naive(at), update_timestamp=naive(at + 0.3))  # fmt: skip
            self.pending.ticks.append(row)
            if template is self.c.tick_skipped:
                path = self.tick_logs / f"{tick_id}.err"
                path.write_bytes(self.c.tick_log)
                os.utime(path, (at, at))
        return self.next_tick_id - 1

    def flush(self) -> None:
        """One chunk's rows, in bulk; then asset_keys as storing each event would have left it."""
        p = self.pending
        with self.t.instance.run_storage.connect() as conn:  # type: ignore[attr-defined]
            if p.runs:
                conn.execute(RunsTable.insert(), p.runs)
                conn.execute(RunTagsTable.insert(), p.run_tags)
        with self.storage.index_connection() as conn:
            for table, rows in ((SqlEventLogStorageTable, p.events), (AssetEventTagsTable, p.event_tags),
                                (AssetCheckExecutionsTable, p.checks)):  # fmt: skip
                if rows:
                    conn.execute(table.insert(), rows)
        if p.runless_shard:
            with self.storage.run_connection("") as conn:
                conn.execute(SqlEventLogStorageTable.insert(), p.runless_shard)
        if p.ticks:
            with self.t.instance.schedule_storage.connect() as conn:  # type: ignore[union-attr]
                conn.execute(JobTickTable.insert(), p.ticks)
        if not self.t.sqlite:
            with self.t.pg_connect() as conn, conn.cursor() as cur:
                # Rows were given explicit ids: move the sequences past them for Dagster's own inserts.
                for table in ("event_logs", "job_ticks"):
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 1) FROM {table}))")  # fmt: skip
        for event_id, text in sorted(self.latest_asset_events.values()):
            self.storage.store_asset_event(deserialize_value(text, EventLogEntry), event_id)
        self.latest_asset_events.clear()
        self.counts["index_rows"] += len(p.events)
        self.counts["check_rows"] += len(p.checks)
        self.counts["ticks"] += len(p.ticks)
        self.pending = Pending()
        self.manifest.flush()


# --- Measurements -----------------------------------------------------------------------------------


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def sqlite_free_bytes(home: Path) -> int:
    """Bytes SQLite's shared databases hold on their free lists (reused by later writes; VACUUM returns them)."""
    free = 0
    for path in [home / "history" / "runs.db", home / "schedules" / "schedules.db",
                 *(home / "history" / "runs").glob("index.db"), *(home / "history" / "runs").glob(".db")]:  # fmt: skip
        if path.exists():
            conn = sqlite3.connect(path)
            free += (
                conn.execute("PRAGMA freelist_count").fetchone()[0]
                * conn.execute("PRAGMA page_size").fetchone()[0]
            )
            conn.close()
    return free


def instance_size(target: Target) -> int:
    if target.sqlite:
        return folder_bytes(target.home)
    with target.pg_connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        return int(cur.fetchone()[0])


def pg_vacuum(target: Target) -> float:
    """Plain VACUUM (no FULL): marks the purged rows' space reusable, as autovacuum does in a real
    deployment within the day between purges; the files keep their size."""
    started = time.perf_counter()
    conn = target.pg_connect()
    try:
        conn.cursor().execute("VACUUM (ANALYZE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def purge_ticks(instance: dg.DagsterInstance, capture: Capture, now: dt.datetime) -> None:
    """The sensor daemon's tick retention (dagster/_daemon/sensor.py, SensorLaunchContext.__exit__)."""
    by_days: dict[int, list[Any]] = defaultdict(list)
    for status, days in instance.get_tick_retention_settings(InstigatorType.SENSOR).items():
        by_days[days].append(status)
    for days, statuses in by_days.items():
        if days <= 0:
            continue
        instance.purge_ticks(
            capture.tick_success["job_origin_id"],
            selector_id=capture.tick_success["selector_id"],
            before=(now - dt.timedelta(days=days)).timestamp(),
            tick_statuses=statuses,
        )


def time_tick_queries(instance: dg.DagsterInstance, now: dt.datetime, repeat: int) -> dict[str, Any]:
    """The instance queries of one lag-sensor tick, ``repeat`` times."""
    now_ms = int(now.timestamp() * 1000)
    totals: list[float] = []
    parts: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, Callable[[], Any]] = {
        "previous_run": lambda: previous_run(instance),
        "freshness": lambda: freshness_evaluations(instance, now_ms, True, 180),
        "get_runs_1": lambda: instance.get_runs(limit=1),
    }
    for _ in range(repeat):
        started = time.perf_counter()
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            parts[name].append(time.perf_counter() - t0)
        totals.append(time.perf_counter() - started)
    out = {"p50": statistics.median(totals), "p95": percentile(totals, 95), "max": max(totals)}
    out.update({f"{name}_p95": percentile(values, 95) for name, values in parts.items()})
    return out


def time_cache_rebuild(
    instance: dg.DagsterInstance, keys: list[str], day_start: dt.datetime
) -> dict[str, Any]:
    """Cold (wiped) and warm partition-status-cache builds per partitioned asset, with the platform's
    partitions definition as it is on that day (a 3-day window) and the clock at the day's end."""
    pdef = build_minute_partitions(day_start - dt.timedelta(days=WINDOW_DAYS))
    storage: Any = instance.event_log_storage
    out: dict[str, Any] = {}
    with dg.partition_loading_context(effective_dt=day_start + DAY):
        partitions = pdef.get_num_partitions()
        for text in keys:
            key = dg.AssetKey.from_db_string(text)
            storage.wipe_asset_cached_status(key)
            t0 = time.perf_counter()
            value = get_and_update_asset_status_cache_value(instance, key, pdef)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            get_and_update_asset_status_cache_value(instance, key, pdef)
            warm = time.perf_counter() - t0
            materialized = (
                value.deserialize_materialized_partition_subsets(pdef).get_partition_keys() if value else []
            )  # type: ignore[union-attr]
            failed = value.deserialize_failed_partition_subsets(pdef).get_partition_keys() if value else []  # type: ignore[union-attr]
            out[key.to_user_string()] = {"cold_s": cold, "warm_s": warm, "materialized": len(list(materialized)),
                                         "failed": len(list(failed))}  # fmt: skip
    return {"partitions": partitions, "assets": out, "max_cold_s": max(v["cold_s"] for v in out.values())}


def count_rows(target: Target) -> dict[str, int]:
    queries = {
        "runs": "SELECT count(*) FROM runs",
        "ticks": "SELECT count(*) FROM job_ticks",
        "check_executions": "SELECT count(*) FROM asset_check_executions",
        "index_events": "SELECT count(*) FROM event_logs",
        "runless_events": "SELECT count(*) FROM event_logs WHERE run_id = ''",
    }
    out = {}
    if target.sqlite:
        dbs = {
            "runs": target.home / "history" / "runs.db",
            "ticks": target.home / "schedules" / "schedules.db",
        }
        for name, sql in queries.items():
            conn = sqlite3.connect(dbs.get(name, target.home / "history" / "runs" / "index.db"))
            out[name] = conn.execute(sql).fetchone()[0]
            conn.close()
        out["shard_files"] = sum(1 for p in (target.home / "history" / "runs").glob("*.db") if p.name not in ("index.db", ".db"))  # fmt: skip
    else:
        with target.pg_connect() as conn, conn.cursor() as cur:
            for name, sql in queries.items():
                cur.execute(sql)
                out[name] = cur.fetchone()[0]
    return out


# NOT EXISTS, not NOT IN: Postgres cannot hash a subquery of millions of ids within work_mem.
ORPHAN_SQL = {
    "check_executions_without_run": "SELECT count(*) FROM asset_check_executions x WHERE x.run_id <> '' AND NOT EXISTS (SELECT 1 FROM {r}runs r WHERE r.run_id = x.run_id)",  # noqa: E501
    "events_without_run": "SELECT count(*) FROM event_logs x WHERE x.run_id <> '' AND NOT EXISTS (SELECT 1 FROM {r}runs r WHERE r.run_id = x.run_id)",  # noqa: E501
    "event_tags_without_event": "SELECT count(*) FROM asset_event_tags x WHERE NOT EXISTS (SELECT 1 FROM event_logs e WHERE e.id = x.event_id)",  # noqa: E501
    "run_tags_without_run": "SELECT count(*) FROM {r}run_tags x WHERE NOT EXISTS (SELECT 1 FROM {r}runs r WHERE r.run_id = x.run_id)",  # noqa: E501
    "runs_without_events": "SELECT count(*) FROM {r}runs x WHERE NOT EXISTS (SELECT 1 FROM event_logs e WHERE e.run_id = x.run_id)",  # noqa: E501
    # An execution kept while the evaluation event it names was deleted (a dangling storage id).
    "check_executions_without_event": "SELECT count(*) FROM asset_check_executions x WHERE x.evaluation_event_storage_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM event_logs e WHERE e.id = x.evaluation_event_storage_id)",  # noqa: E501
}


def count_orphans(target: Target, now: dt.datetime) -> dict[str, int]:
    """What deleted runs left behind, counted with SQL and the file system, not through Dagster or the
    purge; and, the other way round, runs that lost their events, shard or logs."""
    runless_cutoff = naive((now - dt.timedelta(days=POLICY.runless_days)).timestamp())
    stale_runless = (
        "SELECT count(*) FROM event_logs e WHERE run_id = '' AND timestamp < '{cutoff}' AND id NOT IN "
        "(SELECT max(id) FROM event_logs WHERE run_id = '' GROUP BY asset_key, dagster_event_type)"
    )
    out: dict[str, int] = {}
    if target.sqlite:
        runs_dir = target.home / "history" / "runs"
        conn = sqlite3.connect(runs_dir / "index.db")
        conn.execute("ATTACH DATABASE ? AS r", (str(target.home / "history" / "runs.db"),))
        for name, sql in ORPHAN_SQL.items():
            out[name] = conn.execute(sql.format(r="r.")).fetchone()[0]
        run_ids = {row[0] for row in conn.execute("SELECT run_id FROM r.runs")}
        out["stale_runless_events_index"] = conn.execute(stale_runless.format(cutoff=runless_cutoff.strftime(SQLITE_TIME))).fetchone()[0]  # fmt: skip
        conn.close()
        shard = sqlite3.connect(runs_dir / ".db")
        out["stale_runless_events_shard"] = shard.execute(stale_runless.format(cutoff=runless_cutoff.strftime(SQLITE_TIME))).fetchone()[0]  # fmt: skip
        shard.close()
        shards = {p.stem for p in runs_dir.glob("*.db") if p.name not in ("index.db", ".db")}
        out["shard_files_without_run"] = len(shards - run_ids)
        out["runs_without_shard_file"] = len(run_ids - shards)
    else:
        with target.pg_connect() as conn, conn.cursor() as cur:
            for name, sql in ORPHAN_SQL.items():
                cur.execute(sql.format(r=""))
                out[name] = cur.fetchone()[0]
            cur.execute(stale_runless.format(cutoff=runless_cutoff.isoformat(sep=" ")))
            out["stale_runless_events"] = cur.fetchone()[0]
            cur.execute("SELECT run_id FROM runs")
            run_ids = {row[0] for row in cur.fetchall()}
    logs = target.home / "storage"
    folders = {p.name for p in logs.iterdir() if p.is_dir() and not p.name.startswith("__")}
    out["compute_log_folders_without_run"] = len(folders - run_ids)
    out["runs_without_compute_logs"] = len(run_ids - folders)
    cutoff = (now - dt.timedelta(days=POLICY.runless_days)).timestamp()
    out["stale_tick_log_files"] = sum(1 for p in logs.glob("__*/*/*") if p.stat().st_mtime < cutoff)
    return out


# --- The soak ---------------------------------------------------------------------------------------


@dataclass
class Options:
    days: int
    runs_per_day: int
    outage_days: int
    purge_every_hours: int
    measure_days: list[int]
    reference_day: int
    tick_repeat: int
    pg_vacuum: bool


def soak(target: Target, capture: Capture, opts: Options, workdir: Path) -> dict[str, Any]:
    instance = target.instance
    total_days = opts.days + opts.outage_days
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base = today - total_days * DAY
    manifest = workdir / target.name / "manifest.jsonl"
    manifest.unlink(missing_ok=True)
    loader = Loader(target, capture, manifest)
    chunks_per_day = max(1, 24 // opts.purge_every_hours)
    chunk = DAY / chunks_per_day
    minute_of = [(i * 1440) // opts.runs_per_day for i in range(opts.runs_per_day)]
    minute_runs = tests_runs = 0
    days: list[dict[str, Any]] = []
    measures: dict[int, dict[str, Any]] = {}
    print(f"\n[{target.name}] {opts.days} days of {opts.runs_per_day} runs/day (+{opts.outage_days} idle), "
          f"day 1 = {base:%Y-%m-%d}, purge every {opts.purge_every_hours} h; instance {target.home}", flush=True)  # fmt: skip
    header = (f"{'day':>3} {'runs+':>6} {'load_s':>7} {'purged':>6} {'purge_s':>7} {'runs/s':>7} {'runless-':>8} "
              f"{'checks-':>7} {'ticks':>7} {'runs':>6} {'size_MiB':>9} {'free_MiB':>8}")  # fmt: skip
    print(header, flush=True)
    for day in range(1, total_days + 1):
        loader.day = day
        day_start = base + (day - 1) * DAY
        def_start = (day_start - dt.timedelta(days=WINDOW_DAYS)).timestamp()
        load_s = purge_s = 0.0
        reports = []
        loaded = 0
        for c in range(chunks_per_day):
            c_start, c_end = day_start + c * chunk, day_start + (c + 1) * chunk
            t0 = time.perf_counter()
            if day <= opts.days:
                for minute in minute_of:
                    start = day_start + dt.timedelta(minutes=minute)
                    if not c_start <= start < c_end:
                        continue
                    s = start.timestamp()
                    run_id = str(uuid.uuid4())
                    tick_id = loader.ticks(s, run_id, def_start)
                    failed = minute_runs % FAILURE_EVERY == FAILED_MINUTE_RUN
                    loader.run(capture.minute_failed if failed else capture.minute, run_id, s, tick_id, def_start, [])  # fmt: skip
                    minute_runs += 1
                    loaded += 1
                    if minute_runs % TESTS_EVERY == 0:
                        keys = [
                            minute_key(start - dt.timedelta(minutes=m))
                            for m in range(TESTS_EVERY - 1, -1, -1)
                        ]
                        failed = tests_runs % FAILURE_EVERY == FAILED_TESTS_RUN
                        template = capture.tests_failed if failed else capture.tests
                        loader.run(template, str(uuid.uuid4()), s, tick_id, def_start, keys)
                        tests_runs += 1
                        loaded += 1
                    loader.runless(s, def_start)
            loader.flush()
            load_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            now = c_end
            reports.append(purge_history(instance, POLICY, instance.get_asset_keys(), now=now))
            purge_ticks(instance, capture, now)
            purge_s += time.perf_counter() - t0
        now = day_start + DAY
        size_after_purge = instance_size(target)
        vacuum_s = pg_vacuum(target) if (not target.sqlite and opts.pg_vacuum) else 0.0
        size = instance_size(target)
        counts = count_rows(target)
        purged = sum(r.runs for r in reports)
        purge_seconds = sum(r.seconds for r in reports)
        row = {
            "day": day, "now": now.timestamp(), "runs_loaded": loaded, "load_s": load_s,
            "purged_runs": purged, "purge_s": purge_seconds, "purge_and_ticks_s": purge_s,
            "purge_runs_per_s": purged / purge_seconds if purged and purge_seconds else None,
            "runless_deleted": sum(r.runless_events for r in reports),
            "check_executions_deleted": sum(r.check_executions for r in reports),
            "shard_files_deleted": sum(r.shard_files for r in reports),
            "compute_log_folders_deleted": sum(r.compute_log_folders for r in reports),
            "tick_log_files_deleted": sum(r.tick_log_files for r in reports),
            "kept_expired": sorted({k for r in reports for k in r.kept}),
            "size_bytes": size, "size_after_purge_bytes": size_after_purge, "vacuum_s": vacuum_s,
            "sqlite_free_bytes": sqlite_free_bytes(target.home) if target.sqlite else None, **counts,
            "pg_relations": pg_sizes(target, per_relation=True) if not target.sqlite else None,
        }  # fmt: skip
        days.append(row)
        rate = f"{row['purge_runs_per_s']:.1f}" if row["purge_runs_per_s"] else "-"
        free = f"{row['sqlite_free_bytes'] / MIB:.1f}" if target.sqlite else "-"
        print(f"{day:>3} {loaded:>6} {load_s:>7.1f} {purged:>6} {purge_seconds:>7.1f} {rate:>7} "
              f"{row['runless_deleted']:>8} {row['check_executions_deleted']:>7} {counts['ticks']:>7} "
              f"{counts['runs']:>6} {size / MIB:>9.1f} {free:>8}", flush=True)  # fmt: skip
        if day in opts.measure_days and day <= opts.days:
            ticks = time_tick_queries(instance, now, opts.tick_repeat)
            rebuild = time_cache_rebuild(instance, capture.partitioned_keys, day_start)
            measures[day] = {"tick": ticks, "rebuild": rebuild}
            print(f"    day {day}: tick queries p50 {ticks['p50'] * 1000:.0f} ms, p95 {ticks['p95'] * 1000:.0f} ms "
                  f"(previous_run p95 {ticks['previous_run_p95'] * 1000:.0f} ms, freshness p95 "
                  f"{ticks['freshness_p95'] * 1000:.0f} ms); cold cache rebuild over {rebuild['partitions']} "
                  f"partitions: max {rebuild['max_cold_s']:.2f} s", flush=True)  # fmt: skip
            for key, v in rebuild["assets"].items():
                print(f"      {key:<24} cold {v['cold_s']:6.2f} s  warm {v['warm_s']:6.3f} s  "
                      f"materialized {v['materialized']:>5}  failed {v['failed']:>3}", flush=True)  # fmt: skip
    loader.manifest.close()
    last_now = base + total_days * DAY
    orphans = count_orphans(target, last_now)
    tables = pg_sizes(target) if not target.sqlite else {}
    return {
        "storage": target.name, "home": str(target.home), "manifest": str(manifest), "base": base.timestamp(),
        "last_now": last_now.timestamp(), "days": days, "measures": {str(k): v for k, v in measures.items()},
        "orphans": orphans, "loaded": dict(loader.counts), "pg_tables": tables,
        "policy": {"success_days": POLICY.success_days, "failure_days": POLICY.failure_days,
                   "runless_days": POLICY.runless_days},
    }  # fmt: skip


def pg_sizes(target: Target, per_relation: bool = False) -> dict[str, int]:
    """The largest tables with their indexes and TOAST (``pg_total_relation_size``); or, per relation,
    every table, index and TOAST table on its own (where a day's growth goes)."""
    if per_relation:
        size, kinds, schemas, limit = "pg_relation_size", "'r', 'i', 't'", "'public', 'pg_toast'", ""
    else:
        size, kinds, schemas, limit = "pg_total_relation_size", "'r'", "'public'", " LIMIT 12"
    with target.pg_connect() as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT c.relname, {size}(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname IN ({schemas}) AND c.relkind IN ({kinds}) AND {size}(c.oid) > 0 ORDER BY 2 DESC{limit}"
        )
        return {name: int(n) for name, n in cur.fetchall()}


# --- Criteria and report ----------------------------------------------------------------------------


def criteria(result: dict[str, Any], opts: Options) -> list[tuple[str, bool, str]]:
    days = {d["day"]: d for d in result["days"]}
    last = opts.days
    ref = min(opts.reference_day, last)
    out = []
    size_last, size_ref = days[last]["size_bytes"], days[ref]["size_bytes"]
    out.append((f"size day {last} <= 1.1 x day {ref}", size_last <= 1.1 * size_ref,
                f"{size_last / MIB:.1f} MiB vs {size_ref / MIB:.1f} MiB ({size_last / size_ref:.3f}x)"))  # fmt: skip
    if result["storage"] == "postgres":
        peak = max(d["size_bytes"] for d in days.values())
        out.append(("postgres size < 4.5 GiB", peak < 4.5 * GIB, f"peak {peak / GIB:.3f} GiB"))
    rates = [d["purge_runs_per_s"] for d in days.values() if d["purged_runs"] >= 50 and d["purge_runs_per_s"]]
    out.append(("purge >= 10 runs/s", bool(rates) and min(rates) >= 10,
                f"min {min(rates):.1f} runs/s, median {statistics.median(rates):.1f}" if rates else "no purge of >= 50 runs"))  # fmt: skip
    measured = sorted(int(k) for k in result["measures"])
    if measured:
        m = result["measures"][str(measured[-1])]
        out.append((f"tick queries p95 < 2 s (day {measured[-1]})", m["tick"]["p95"] < 2.0, f"{m['tick']['p95'] * 1000:.0f} ms"))  # fmt: skip
        worst = max(result["measures"][str(d)]["rebuild"]["max_cold_s"] for d in measured)
        out.append(("cold status-cache rebuild < 30 s per asset", worst < 30.0, f"max {worst:.2f} s"))
    bad = {k: v for k, v in result["orphans"].items() if v}
    out.append(
        ("nothing orphaned or past retention (SQL, files)", not bad, json.dumps(bad) if bad else "all 0")
    )
    return out


def print_budgets(capture: Capture) -> None:
    print("Per-run event budget (serialized event JSON):")
    for label, t in (("captured minute run (dbt tests in it)", capture.full), ("minute run now", capture.minute),
                     ("failed minute run", capture.minute_failed), ("dbt_tests_job run", capture.tests),
                     ("lag sensor report (runless, per minute)", capture.runless)):  # fmt: skip
        count, size = t.budget
        print(
            f"  {label:<42} {count:>4} events {size / 1024:>7.1f} KiB  ({len(t.checks)} check-execution rows)"
        )
    tick = len(capture.tick_skipped["tick_body"]), len(capture.tick_success["tick_body"])
    print(f"  ticks: {TICKS_PER_MINUTE}/run-minute, skipped {tick[0]} B, requesting {tick[1]} B; tick log file "
          f"{len(capture.tick_log)} B; compute logs {sum(len(d) for _, d in capture.compute_logs)} B/run")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--days", type=int, default=None, help="simulated days with load (default 30; --quick 6)"
    )
    parser.add_argument(
        "--runs-per-day", type=int, default=None, help="minute runs a day (default 1440; --quick 200)"
    )
    parser.add_argument("--storage", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 6 days of 200 runs, fewer repetitions"
    )
    parser.add_argument("--outage-days", type=int, default=0,
                        help="idle days after the loaded ones (purges only): the protected runs stay")  # fmt: skip
    parser.add_argument("--purge-every-hours", type=int, default=24, choices=(1, 2, 3, 4, 6, 8, 12, 24))
    parser.add_argument(
        "--measure-days", default=None, help="days to time the tick queries and cache rebuild"
    )
    parser.add_argument(
        "--reference-day", type=int, default=None, help="size criterion baseline (default 10)"
    )
    parser.add_argument("--tick-repeat", type=int, default=None, help="tick-query repetitions (default 50)")
    parser.add_argument("--no-pg-vacuum", action="store_true", help="no plain VACUUM after each day's purge")
    parser.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="the captured instance's home")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="kept; default: a temporary folder, removed"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    days = args.days or (6 if args.quick else 30)
    measure = [int(d) for d in args.measure_days.split(",")] if args.measure_days else ([2, days] if args.quick else [10, days])  # fmt: skip
    opts = Options(
        days=days, runs_per_day=args.runs_per_day or (200 if args.quick else 1440), outage_days=args.outage_days,
        purge_every_hours=args.purge_every_hours, measure_days=measure,
        reference_day=args.reference_day or (4 if args.quick else 10),
        tick_repeat=args.tick_repeat or (10 if args.quick else 50), pg_vacuum=not args.no_pg_vacuum,
    )  # fmt: skip
    if not (args.capture / "history" / "runs.db").exists():
        sys.exit(
            f"no captured instance at {args.capture}: make one with `STOCK_PLATFORM_HOME=/tmp/sp_cap DBT_TESTS_EVERY_MINUTES=2 ./scripts/run.sh --minutes 4 --no-dashboard`"
        )
    print(f"load average at start: {os.getloadavg()}  (cpus: {os.cpu_count()})", flush=True)
    capture = read_capture(args.capture)
    print_budgets(capture)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="history-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    storages = ["sqlite", "postgres"] if args.storage == "both" else [args.storage]
    results: dict[str, Any] = {"options": vars(opts), "runs": {}}
    summary: list[tuple[str, str, bool, str]] = []
    try:
        for name in storages:
            started = time.perf_counter()
            with open_target(name, workdir, capture) as target:
                result = soak(target, capture, opts, workdir)
            result["wall_s"] = time.perf_counter() - started
            result["criteria"] = [{"name": n, "pass": ok, "detail": d} for n, ok, d in criteria(result, opts)]
            results["runs"][name] = result
            summary += [(name, n, ok, d) for n, ok, d in criteria(result, opts)]
            print(f"[{name}] wall time {result['wall_s'] / 60:.1f} min; loaded {result['loaded']}")
            print(f"[{name}] orphans: {result['orphans']}")
            if result["pg_tables"]:
                print(f"[{name}] largest tables (MiB): "
                      + ", ".join(f"{k} {v / MIB:.1f}" for k, v in result["pg_tables"].items()))  # fmt: skip
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nSummary:")
    for name, criterion, ok, detail in summary:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<8} {criterion:<48} {detail}")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
