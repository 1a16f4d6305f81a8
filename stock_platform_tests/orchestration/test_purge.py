"""The history purge on both instance storages: which runs go, what they leave behind, what is kept.

Real runs of a small partitioned asset with a check (events, check executions, shard files and compute
logs as Dagster writes them), backdated in the run and event tables; the expected survivors are computed
here from the ages and statuses, independently of the purge's own queries.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.runs.schema import RunsTable

from stock_platform.orchestration.purge import RetentionPolicy, purge_history

NOW = dt.datetime.now(dt.UTC)
POLICY = RetentionPolicy(success_days=3, failure_days=14, runless_days=1)
partitions = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=partitions, check_specs=[dg.AssetCheckSpec("positive", asset="minute_asset")])
def minute_asset(context):
    print(f"materializing {context.partition_key}")  # a compute log to purge
    if context.run.tags.get("fail") == "yes":
        raise RuntimeError("this run fails on purpose")
    yield dg.Output(1)
    yield dg.AssetCheckResult(passed=True, check_name="positive")


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    if request.param == "sqlite":
        with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
            yield inst
        return
    server = request.getfixturevalue("postgres_server")
    overrides = {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "hostname": server.host, "port": server.port, "username": server.user,
                    "password": server.password, "db_name": server.db, "scheme": "postgresql+psycopg2",
                }
            }
        },
        "compute_logs": {
            "module": "dagster._core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "logs")},
        },
    }  # fmt: skip
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as inst:
        inst.wipe()  # the session's database: start from an empty history
        yield inst


def backdate(instance: dg.DagsterInstance, run_id: str, age: dt.timedelta) -> None:
    """Make a run, its events and its check executions ``age`` old."""
    when = (NOW - age).replace(tzinfo=None)
    with instance.run_storage.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(
            RunsTable.update()
            .where(RunsTable.c.run_id == run_id)
            .values(create_timestamp=when, update_timestamp=when, end_time=when.timestamp())
        )
    storage = instance.event_log_storage
    for connection in (storage.index_connection(), storage.run_connection(run_id)):  # type: ignore[attr-defined]
        with connection as conn:
            conn.execute(
                SqlEventLogStorageTable.update()
                .where(SqlEventLogStorageTable.c.run_id == run_id)
                .values(timestamp=when)
            )
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        conn.execute(
            AssetCheckExecutionsTable.update()
            .where(AssetCheckExecutionsTable.c.run_id == run_id)
            .values(create_timestamp=when)
        )


def runless_report(instance: dg.DagsterInstance, age: dt.timedelta, value: int) -> None:
    """A lag-sensor-like runless observation and check evaluation, ``age`` old."""
    storage = instance.event_log_storage
    connections = [storage.index_connection]  # type: ignore[attr-defined]
    if hasattr(storage, "path_for_shard"):  # SQLite keeps runless events in their own shard too
        connections.append(lambda: storage.run_connection(""))  # type: ignore[attr-defined]
    events, checks = SqlEventLogStorageTable, AssetCheckExecutionsTable
    before = []
    for connect in connections:
        with connect() as conn:
            before.append(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))).scalar_one())
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        checks_before = conn.execute(sa.select(sa.func.coalesce(sa.func.max(checks.c.id), 0))).scalar_one()
    instance.report_runless_asset_event(
        dg.AssetObservation(asset_key="minute_asset", metadata={"lag": value})
    )
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey("minute_asset"), check_name="positive", passed=True)
    )
    when = (NOW - age).replace(tzinfo=None)
    for connect, newest in zip(connections, before, strict=True):
        with connect() as conn:
            conn.execute(events.update().where(events.c.id > newest).values(timestamp=when))
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        conn.execute(checks.update().where(checks.c.id > checks_before).values(create_timestamp=when))


@pytest.mark.parametrize("seed", [1, 2])
def test_purge_keeps_exactly_what_the_retention_and_the_platform_need(instance, seed):
    rng = random.Random(seed)
    plan = []  # (age, fails, by the lag sensor)
    for _ in range(14):
        plan.append((dt.timedelta(days=rng.uniform(0, 20)), rng.random() < 0.3, rng.random() < 0.3))
    plan.sort(key=lambda p: -p[0])  # oldest first, as runs are made
    runs = {}
    for n, (age, fails, by_sensor) in enumerate(plan):
        tags = {"fail": "yes" if fails else "no"}
        if by_sensor:
            tags["dagster/sensor_name"] = "kafka_lag_sensor"
        result = dg.materialize(
            [minute_asset], instance=instance, partition_key=f"2026-01-{n + 1:02d}", tags=tags,
            raise_on_error=False,
        )  # fmt: skip
        runs[result.run_id] = (age, fails, by_sensor)
    for run_id, (age, _, _) in runs.items():
        backdate(instance, run_id, age)
    for hours in (60, 30, 5, 0.1):
        runless_report(instance, dt.timedelta(hours=hours), int(hours))

    # Independently: what the retention keeps, plus the sensor's two newest runs and the run of the
    # asset's latest materialization.
    def kept_by_age(age: dt.timedelta, fails: bool) -> bool:
        return age <= dt.timedelta(days=POLICY.failure_days if fails else POLICY.success_days)

    order = list(runs)  # creation order
    sensor_newest = [r for r in order if runs[r][2]][-2:]
    latest_materialization = [r for r in order if not runs[r][1]][-1:]
    expected = {r for r, (age, fails, _) in runs.items() if kept_by_age(age, fails)}
    expected |= set(sensor_newest) | set(latest_materialization)

    report = purge_history(instance, POLICY, [dg.AssetKey("minute_asset")], now=NOW)

    assert set(instance.get_run_ids()) == expected
    assert report.runs == len(runs) - len(expected)
    storage = instance.event_log_storage
    # Nothing of a deleted run is left: no events, no check executions, no shard file, no log folder.
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        event_runs = {r[0] for r in conn.execute(sa.select(SqlEventLogStorageTable.c.run_id).distinct())}
        check_runs = {r[0] for r in conn.execute(sa.select(AssetCheckExecutionsTable.c.run_id).distinct())}
        runless_checks = conn.execute(
            sa.select(sa.func.count()).where(AssetCheckExecutionsTable.c.run_id == "")
        ).scalar_one()
    assert event_runs - {""} <= expected and check_runs - {""} <= expected
    # Runless: the reports newer than a day (5 h and 0.1 h old) stay; so does the newest of each kind.
    assert runless_checks == 2
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        runless_events = conn.execute(
            sa.select(SqlEventLogStorageTable.c.dagster_event_type, sa.func.count())
            .where(SqlEventLogStorageTable.c.run_id == "")
            .group_by(SqlEventLogStorageTable.c.dagster_event_type)
        ).all()
    assert {kind: n for kind, n in runless_events if kind == "ASSET_OBSERVATION"} == {"ASSET_OBSERVATION": 2}
    if hasattr(storage, "path_for_shard"):
        shards = Path(storage._base_dir)  # type: ignore[attr-defined]
        assert {p.name.removesuffix(".db") for p in shards.glob("*.db")} - {"", "index"} == expected
    logs = Path(instance.compute_log_manager._base_dir)  # type: ignore[attr-defined]
    assert {p.name for p in logs.iterdir() if p.is_dir()} <= expected
    # The asset's latest materialization, which the freshness checks read, is still there.
    assert instance.get_latest_materialization_event(dg.AssetKey("minute_asset")) is not None

    # A second purge finds nothing more to do.
    again = purge_history(instance, POLICY, [dg.AssetKey("minute_asset")], now=NOW)
    assert (again.runs, again.check_executions, again.runless_events, again.shard_files) == (0, 0, 0, 0)


def test_the_purge_job_runs_on_the_instance_it_runs_in(tmp_path):
    from stock_platform.orchestration.purge import HistoryRetention, purge_history_job

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        old = dg.materialize([minute_asset], instance=instance, partition_key="2026-01-01")
        backdate(instance, old.run_id, dt.timedelta(days=10))
        result = purge_history_job.execute_in_process(
            instance=instance,
            resources={"history": HistoryRetention(success_days=3, failure_days=14, runless_days=1)},
        )
        assert result.success
        # The old run went, except it holds the asset's latest materialization: it is kept.
        assert set(instance.get_run_ids()) == {old.run_id, result.run_id}
        newer = dg.materialize([minute_asset], instance=instance, partition_key="2026-01-02")
        purge_history_job.execute_in_process(
            instance=instance,
            resources={"history": HistoryRetention(success_days=3, failure_days=14, runless_days=1)},
        )
        assert old.run_id not in set(instance.get_run_ids()) and newer.run_id in instance.get_run_ids()
