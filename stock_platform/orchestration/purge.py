"""Bounded instance history: what a per-minute platform (1,440 runs a day) may keep, and the purge.

Dagster's own ``retention:`` covers sensor and schedule ticks only, and ``delete_run`` leaves behind the
run's asset-check executions, its SQLite shard file and its compute logs; runless events (the lag
sensor's observations and check evaluations) are never removed. ``purge_history`` removes all of that
past its bound, on SQLite and on Postgres, through the storages' own tables.

What is never removed, because the platform reads it:
- runs still queued or running, and the newest run the lag sensor requested (its plan starts from it);
- the run of each asset's latest materialization (the gold freshness checks and the UI's "latest");
- the newest runless event of each kind per asset and the newest execution of each check;
- anything a rebuild needs: `stock-platform rebuild` reads the lake and Kafka, never the instance.

Deleting a run also removes its minutes' "materialized" mark; the partition window (partitions.py) is
never longer than the successful runs' retention, so those minutes have left the UI by then.
"""

import datetime as dt
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.tags import PRIORITY_TAG

from stock_platform.orchestration.jobs import INGEST_TAG
from stock_platform.partitions import minute_partitions

# Runs deleted per round trip of run-id queries; a purge of one day of runs is ~1,500 runs.
BATCH = 200
KEEP_RUNS_OF_SENSOR = "kafka_lag_sensor"
# The sensor plans from its newest minute run, which a dbt_tests_job run may follow (sensors.previous_run).
KEEP_NEWEST = 2
FINISHED_OK = [dg.DagsterRunStatus.SUCCESS]
FINISHED_BADLY = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of history is kept, in days (settings HISTORY_*_DAYS)."""

    success_days: float
    failure_days: float
    runless_days: float

    def cutoffs(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
        return (
            now - dt.timedelta(days=self.success_days),
            now - dt.timedelta(days=self.failure_days),
            now - dt.timedelta(days=self.runless_days),
        )


@dataclass
class PurgeReport:
    runs: int = 0
    check_executions: int = 0
    runless_events: int = 0
    shard_files: int = 0
    compute_log_folders: int = 0
    tick_log_files: int = 0
    seconds: float = 0.0
    kept: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, Any]:
        figures = {name: value for name, value in vars(self).items() if name != "kept"}
        return {**figures, "runs_per_s": round(self.runs / self.seconds, 1) if self.seconds else 0.0}


def protected_runs(instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey]) -> set[str]:
    """Runs the platform still reads: the lag sensor's newest, and each asset's latest materialization."""
    keep = {
        run.run_id
        for run in instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/sensor_name": KEEP_RUNS_OF_SENSOR}), limit=KEEP_NEWEST
        )
    }
    latest = instance.get_latest_materialization_events(list(asset_keys))
    keep |= {event.run_id for event in latest.values() if event is not None}
    return keep


def expired_runs(
    instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus], before: dt.datetime
) -> list[str]:
    """Ids of finished runs with those statuses last updated before ``before``, oldest first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=statuses, updated_before=before), ascending=True
    )
    return [record.dagster_run.run_id for record in records]


def _index_connections(storage: Any) -> list[Any]:
    """Connections to every database holding event rows: the index and, for per-run SQLite shards, the
    runless events' own shard (``.db``)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (  # noqa: PLC0415
        SqliteEventLogStorage,
    )

    connections = [storage.index_connection()]
    if isinstance(storage, SqliteEventLogStorage):
        connections.append(storage.run_connection(""))
    return connections


def _delete_check_executions(storage: Any, run_ids: Sequence[str]) -> int:
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable  # noqa: PLC0415

    if not run_ids or not storage.has_table("asset_check_executions"):
        return 0
    with storage.index_connection() as conn:
        result = conn.execute(
            AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id.in_(run_ids))
        )
    return int(result.rowcount or 0)


def _delete_runless(storage: Any, before: dt.datetime) -> tuple[int, int]:
    """Runless events and check executions older than ``before``, except each kind's newest."""
    from dagster._core.storage.event_log.schema import (  # noqa: PLC0415
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        SqlEventLogStorageTable,
    )

    naive = before.astimezone(dt.UTC).replace(tzinfo=None)  # the tables store naive UTC
    events = SqlEventLogStorageTable
    events_deleted = 0
    for connection in _index_connections(storage):
        with connection as conn:
            newest = (
                sa.select(sa.func.max(events.c.id))
                .where(events.c.run_id == "")
                .group_by(events.c.asset_key, events.c.dagster_event_type)
            )
            old = sa.select(events.c.id).where(
                events.c.run_id == "", events.c.timestamp < naive, events.c.id.not_in(newest)
            )
            ids = [row[0] for row in conn.execute(old)]
            for start in range(0, len(ids), 5_000):
                chunk = ids[start : start + 5_000]
                conn.execute(AssetEventTagsTable.delete().where(AssetEventTagsTable.c.event_id.in_(chunk)))
                conn.execute(events.delete().where(events.c.id.in_(chunk)))
            events_deleted += len(ids)
    checks_deleted = 0
    if storage.has_table("asset_check_executions"):
        checks = AssetCheckExecutionsTable
        with storage.index_connection() as conn:
            newest = sa.select(sa.func.max(checks.c.id)).group_by(checks.c.asset_key, checks.c.check_name)
            result = conn.execute(
                checks.delete().where(
                    checks.c.run_id == "", checks.c.create_timestamp < naive, checks.c.id.not_in(newest)
                )
            )
            checks_deleted = int(result.rowcount or 0)
    return events_deleted, checks_deleted


def _orphans(instance: dg.DagsterInstance, run_ids: set[str]) -> set[str]:
    """Which of ``run_ids`` no longer exist in the run storage."""
    ids = sorted(run_ids)
    existing: set[str] = set()
    for start in range(0, len(ids), BATCH):
        existing |= set(instance.get_run_ids(filters=dg.RunsFilter(run_ids=ids[start : start + BATCH])))
    return set(ids) - existing


def _delete_orphaned_check_executions(instance: dg.DagsterInstance) -> int:
    """Check executions of runs deleted earlier (by this purge before it cleaned up, or from the UI)."""
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable  # noqa: PLC0415

    storage: Any = instance.event_log_storage
    if not storage.has_table("asset_check_executions"):
        return 0
    with storage.index_connection() as conn:
        run_ids = {
            row[0] for row in conn.execute(sa.select(AssetCheckExecutionsTable.c.run_id).distinct()) if row[0]
        }
    return _delete_check_executions(storage, sorted(_orphans(instance, run_ids)))


def _local_folders(instance: dg.DagsterInstance) -> tuple[Path | None, Path | None]:
    """The SQLite shard folder and the local compute-log folder, when the instance has them."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (  # noqa: PLC0415
        SqliteEventLogStorage,
    )
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager  # noqa: PLC0415

    storage: Any = instance.event_log_storage
    shards = Path(storage._base_dir) if isinstance(storage, SqliteEventLogStorage) else None
    manager: Any = instance.compute_log_manager
    logs = Path(manager._base_dir) if isinstance(manager, LocalComputeLogManager) else None
    return shards, logs


def _delete_orphaned_files(
    instance: dg.DagsterInstance, tick_logs_before: dt.datetime
) -> tuple[int, int, int]:
    """SQLite shard files and local compute-log folders of runs that no longer exist, and local tick logs
    (one pair of files per sensor tick) older than ``tick_logs_before``."""
    shards, logs = _local_folders(instance)
    shard_files = folders = tick_files = 0
    if shards is not None and shards.is_dir():
        # "index.db" is the index; ".db" is the shard of runless events (run id "").
        shard_files_of_runs = (p for p in shards.glob("*.db") if p.name not in (".db", "index.db"))
        candidates = {p.name.removesuffix(".db"): p for p in shard_files_of_runs}
        for run_id in _orphans(instance, set(candidates)):
            candidates[run_id].unlink(missing_ok=True)
            shard_files += 1
    if logs is not None and logs.is_dir():
        run_dirs = {p.name: p for p in logs.iterdir() if p.is_dir() and not p.name.startswith("__")}
        for run_id in _orphans(instance, set(run_dirs)):
            shutil.rmtree(run_dirs[run_id], ignore_errors=True)
            folders += 1
        cutoff = tick_logs_before.timestamp()
        for path in logs.glob("__*/*/*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                tick_files += 1
    return shard_files, folders, tick_files


def purge_history(
    instance: dg.DagsterInstance,
    policy: RetentionPolicy,
    asset_keys: Iterable[dg.AssetKey] = (),
    now: dt.datetime | None = None,
) -> PurgeReport:
    """Delete what is past ``policy`` and what deleted runs left behind; returns what was removed."""
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    ok_before, bad_before, runless_before = policy.cutoffs(now)
    report = PurgeReport()
    keep = protected_runs(instance, asset_keys)
    storage: Any = instance.event_log_storage
    for statuses, before in ((FINISHED_OK, ok_before), (FINISHED_BADLY, bad_before)):
        expired = expired_runs(instance, statuses, before)
        doomed = [run_id for run_id in expired if run_id not in keep]
        report.kept += sorted(keep.intersection(expired))
        for start in range(0, len(doomed), BATCH):
            chunk = doomed[start : start + BATCH]
            for run_id in chunk:
                # The run, its tags, its events and its asset-event tags (Dagster's own deletion).
                instance.delete_run(run_id)
                report.compute_log_folders += _delete_compute_logs(instance, run_id)
            report.check_executions += _delete_check_executions(storage, chunk)
            report.runs += len(chunk)
    events, checks = _delete_runless(storage, runless_before)
    report.runless_events += events
    report.check_executions += checks + _delete_orphaned_check_executions(instance)
    shard_files, folders, tick_files = _delete_orphaned_files(instance, runless_before)
    report.shard_files += shard_files
    report.compute_log_folders += folders
    report.tick_log_files += tick_files
    report.seconds = time.perf_counter() - started
    return report


def _delete_compute_logs(instance: dg.DagsterInstance, run_id: str) -> int:
    """A run's captured stdout/stderr, wherever the instance keeps them (a local folder, an S3 prefix)."""
    try:
        instance.compute_log_manager.delete_logs(prefix=[run_id])
    except NotImplementedError:  # a manager without deletion: its own lifecycle rules apply
        return 0
    return 1


# The UTC day whose partition window the code location was last reloaded for (instance key-value store).
WINDOW_DAY_KEY = "stock_platform/partition_window_day"
LOCATION_NAME = "stock_platform"


def move_partition_window(instance: dg.DagsterInstance, webserver_url: str, today: dt.date) -> bool:
    """Reload the code location through the webserver once per UTC day, so that a long-lived code server
    (compose's, or `dagster dev`'s) lists today's window of minutes (partitions.py computes its start when
    the code is loaded). Returns whether it reloaded; raises ReloadFailed when the webserver refused."""
    from urllib.parse import urlparse  # noqa: PLC0415

    from dagster_graphql import DagsterGraphQLClient, ReloadRepositoryLocationStatus  # noqa: PLC0415

    storage: Any = instance.run_storage
    if storage.get_cursor_values({WINDOW_DAY_KEY}).get(WINDOW_DAY_KEY) == today.isoformat():
        return False
    url = urlparse(webserver_url)
    client = DagsterGraphQLClient(
        url.hostname or "127.0.0.1", port_number=url.port, use_https=url.scheme == "https", timeout=60
    )
    info = client.reload_repository_location(LOCATION_NAME)
    if info.status != ReloadRepositoryLocationStatus.SUCCESS:
        raise ReloadFailed(
            f"the webserver at {webserver_url} could not reload {LOCATION_NAME}: {info.message}"
        )
    storage.set_cursor_values({WINDOW_DAY_KEY: today.isoformat()})
    return True


class ReloadFailed(RuntimeError):
    pass


class HistoryRetention(dg.ConfigurableResource):
    """The retention the purge applies (HISTORY_SUCCESS_DAYS, HISTORY_FAILURE_DAYS, HISTORY_RUNLESS_DAYS),
    and the webserver that reloads the code location when the partition window moves (DAGSTER_WEBSERVER_URL)."""

    success_days: int
    failure_days: int
    runless_days: int
    webserver_url: str = "http://127.0.0.1:3000"

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(self.success_days, self.failure_days, self.runless_days)


@dg.op(description="Deletes instance history past its retention and what deleted runs left behind.")
def purge_history_op(context: dg.OpExecutionContext, history: HistoryRetention) -> None:
    instance = context.instance
    report = purge_history(instance, history.policy(), instance.get_asset_keys())
    context.log.info(f"history purge: {report.as_metadata()}")
    if report.kept:
        context.log.info(f"kept {len(report.kept)} expired run(s) the platform still reads: {report.kept}")
    try:
        if move_partition_window(instance, history.webserver_url, dt.datetime.now(dt.UTC).date()):
            context.log.info(
                f"reloaded the code location: the partition window starts {minute_partitions.start}"
            )
    except Exception as exc:  # noqa: BLE001  the purge is done; the next hourly run tries the reload again
        context.log.warning(
            f"could not reload the code location through {history.webserver_url} to move the partition "
            f"window ({exc}); check DAGSTER_WEBSERVER_URL, or reload it from the UI"
        )


# Queued in the ingestion lane (the run queue's one-at-a-time tag), at its front: it runs between two
# minute runs, never beside one. Beside one it added a second run process (~130 MiB) to the peak of a
# catch-up (benchmarks/catch_up.py), and its deletes competed with the run's writes to the instance.
@dg.job(
    tags={INGEST_TAG: "purge", PRIORITY_TAG: "1"},
    description=(
        "Keeps the instance's history bounded (docs/operations.md): successful runs HISTORY_SUCCESS_DAYS, "
        "failed ones HISTORY_FAILURE_DAYS, runless events HISTORY_RUNLESS_DAYS, and what Dagster's own "
        "run deletion leaves behind."
    ),
)
def purge_history_job() -> None:
    purge_history_op()


# Hourly, so each purge is small (~65 runs); off the minute's first seconds, when the minute run starts.
purge_history_schedule = dg.ScheduleDefinition(
    name="purge_history_schedule",
    job=purge_history_job,
    cron_schedule="17 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
