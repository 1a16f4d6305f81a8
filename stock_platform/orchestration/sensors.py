"""kafka_lag_sensor: watches the ingest group's lag and turns closed minutes into runs.

A tick reads a few offsets from Kafka (never the list of partition keys), records the lag on the topic
asset, evaluates the lag and gold-freshness checks, and asks the planner which minutes to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import dagster as dg
from confluent_kafka import KafkaException

from stock_platform.orchestration.checks import LagSensorConfig, freshness_evaluations, lag_evaluation
from stock_platform.orchestration.jobs import dbt_tests_job, minute_pipeline_job
from stock_platform.orchestration.planning import (
    LagCursor,
    MinuteRange,
    Plan,
    PreviousRun,
    plan_runs,
    plan_tests,
    report_due,
)
from stock_platform.partitions import (
    MINUTE_MS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    minute_key,
    minute_key_from_ms,
    minute_partitions,
)
from stock_platform.resources.kafka import KafkaResource, KafkaUnavailable, TopicMisconfigured

SENSOR_NAME = "kafka_lag_sensor"
# Dagster's sensor daemon looks at its sensors every 5 s (its loop time, not configurable). The minimum
# interval is a second shorter so that jitter never makes a loop skip the sensor (an interval equal to
# the loop time gave 10 s gaps between ticks).
DAEMON_LOOP_S = 5
SENSOR_INTERVAL_S = DAEMON_LOOP_S - 1
# A tick that falls this close before a minute's end waits for the end, so the minute's run is requested
# within a fraction of a second of its close instead of at the next tick (on average 2.5 s later). Longer
# than the gap between ticks, so one tick before every close waits.
ALIGN_WITHIN_S = DAEMON_LOOP_S + 1.5
# After the end: the first look at Kafka, then one every POLL_MS until every partition has a record of
# the new minute (the old one is then complete: Kafka appends in order per partition) or the grace
# period is over. Looking once and then only at the grace's end made the ~10 % of minutes in which some
# partition was still quiet at the first look wait the whole grace (the p95 of minute close -> gold).
SETTLE_MS = 100
POLL_MS = 100
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def now_ms() -> int:
    """The sensor's clock (a function, so tests can set the time a tick sees)."""
    return int(time.time() * 1000)


def sleep_ms(ms: int) -> None:
    """The sensor's wait (a function, so tests can advance their clock instead of sleeping)."""
    time.sleep(ms / 1000)


def wait_for_close(
    now: int,
    grace_ms: int,
    snapshot_at: Any,
    runs_due: Callable[[int, Any], bool] = lambda _now, _snapshot: False,
) -> tuple[int, Any]:
    """The Kafka snapshot a tick plans from, taken just after the current minute's end when that end is
    near: ``snapshot_at(now)`` from ``SETTLE_MS`` past the end, again every ``POLL_MS`` while some
    partition has no record of the new minute yet, and a last time when the grace period is over. Far
    from an end it is taken at once. Near an end, a first look is taken at once too, and used when
    ``runs_due(now, snapshot)``: closed minutes are waiting to be requested (a backlog, e.g. the first
    tick after a day down), and their runs must not wait up to ALIGN_WITHIN_S plus the grace for a
    minute that will queue behind them anyway; the closing minute is then requested by a later tick.
    Returns the time of the snapshot and the snapshot.
    """
    end = (now // MINUTE_MS + 1) * MINUTE_MS
    snapshot = snapshot_at(now)
    if end - now > ALIGN_WITHIN_S * 1000 or runs_due(now, snapshot):
        return now, snapshot
    sleep_ms(max(0, end + SETTLE_MS - now_ms()))  # the first look took some time
    while True:
        now = now_ms()
        snapshot = snapshot_at(now)
        if snapshot.current_minute_has_records or now >= end + grace_ms:
            return now, snapshot
        sleep_ms(min(POLL_MS, end + grace_ms - now))


def previous_run(instance: dg.DagsterInstance) -> PreviousRun:
    """The state of the newest run this sensor requested: all its runs execute one at a time, in order."""
    # The tests runs it requests are not part of that order (each follows a minute run in the queue).
    recent = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}), limit=5)
    runs = [run for run in recent if run.job_name != dbt_tests_job.name][:1]
    if not runs:
        return PreviousRun.NONE
    if runs[0].status in IN_FLIGHT:
        return PreviousRun.IN_FLIGHT
    if runs[0].status in FAILED:
        return PreviousRun.FAILED
    return PreviousRun.SUCCEEDED


def run_request(minutes: MinuteRange, job_name: str = minute_pipeline_job.name) -> dg.RunRequest:
    # Run keys are unique per sensor: the tests runs' keys must never equal a minute run's.
    run_key = minutes.run_key if job_name == minute_pipeline_job.name else f"{job_name}:{minutes.run_key}"
    if minutes.first == minutes.last:
        return dg.RunRequest(run_key=run_key, partition_key=minutes.first, job_name=job_name)
    return dg.RunRequest(
        run_key=run_key,
        job_name=job_name,
        tags={
            RANGE_START_TAG: minutes.first,
            RANGE_END_TAG: minutes.last,
        },
    )


def lag_metadata(snapshot: Any) -> dict[str, Any]:
    return {
        "total_lag": dg.MetadataValue.int(snapshot.total_lag),
        "max_partition_lag": dg.MetadataValue.int(max((lag.lag for lag in snapshot.lags), default=0)),
        "partitions": dg.MetadataValue.int(len(snapshot.lags)),
        "lag_by_partition": dg.MetadataValue.json({str(lag.partition): lag.lag for lag in snapshot.lags}),
        "high_watermarks": dg.MetadataValue.json({str(lag.partition): lag.high for lag in snapshot.lags}),
    }


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[minute_pipeline_job, dbt_tests_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every ~5 s, and just after each minute's end: records the ingest group's lag on stock_quotes_topic and requests a run of "
        "minute_pipeline_job for each closed minute not yet ingested (ranges of minutes when behind), and "
        "dbt_tests_job every DBT_TESTS_EVERY_MINUTES minutes."
    ),
)
def kafka_lag_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, lag_sensor: LagSensorConfig
) -> dg.SensorResult | dg.SkipReason:
    grace_ms = int(kafka.grace_seconds * 1000)
    previous_cursor = LagCursor.from_json(context.cursor)

    def plan_at(at: int, snapshot: Any) -> Plan:
        # The previous run's state as of this look: it may end (or fail) while the tick waits for a close.
        return plan_runs(
            snapshot.first_pending_ms,
            at,
            previous_cursor,
            previous_run(context.instance),
            grace_ms=grace_ms,
            current_minute_has_records=snapshot.current_minute_has_records,
            batch_minutes=lag_sensor.batch_minutes,
            max_runs_per_tick=lag_sensor.max_runs_per_tick,
            retry_after_s=lag_sensor.retry_after_s,
            earliest_key=minute_key(minute_partitions.start),
            next_record_ms=kafka.next_record_ms,
        )

    # The plan from the first look near a minute's end; used as is when it has runs (the tick then does
    # not wait, and planning again would repeat its Kafka lookups).
    first_look: list[Plan] = []

    def runs_due(at: int, snapshot: Any) -> bool:
        first_look.append(plan_at(at, snapshot))
        return bool(first_look[0].ranges)

    try:
        now, snapshot = wait_for_close(
            now_ms(),
            grace_ms,
            lambda at: kafka.snapshot(at, recent_ms=lag_sensor.fresh_within_s * 1000),
            runs_due,
        )
        # Runs on a topic that keeps producers' clocks would only fail: say what to fix instead.
        kafka.require_append_time()
        plan = first_look[0] if first_look and first_look[0].ranges else plan_at(now, snapshot)
    except (KafkaUnavailable, KafkaException, TopicMisconfigured) as exc:
        return dg.SkipReason(f"No runs requested: {exc}")

    requests = [run_request(r) for r in plan.ranges]
    cursor = plan.cursor
    if plan.ranges:
        tests, tested_through = plan_tests(
            cursor.requested_through or plan.ranges[-1].last,
            cursor.tested_through,
            lag_sensor.tests_every_minutes,
            max_minutes=lag_sensor.batch_minutes,
        )
        cursor = replace(cursor, tested_through=tested_through)
        if tests is not None:
            requests.append(run_request(tests, dbt_tests_job.name))

    lag = lag_evaluation(snapshot.total_lag, lag_sensor.lag_warn_threshold)
    freshness = freshness_evaluations(
        context.instance, now, snapshot.records_recently, lag_sensor.fresh_within_s
    )
    outcomes = [e.passed for e in (lag, *freshness)]
    events: list[Any] = []
    minute = minute_key_from_ms(now)
    if report_due(cursor, minute, outcomes):
        events = [
            dg.AssetObservation(asset_key="stock_quotes_topic", metadata=lag_metadata(snapshot)),
            lag,
            *freshness,
        ]
        cursor = replace(cursor, reported_minute=minute, reported_outcomes=outcomes)
    if plan.skip_reason is not None:
        context.log.info(plan.skip_reason)
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor.to_json(),
        asset_events=events,
        skip_reason=plan.skip_reason,
    )
