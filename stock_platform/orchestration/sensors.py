"""kafka_lag_sensor: watches the ingest group's lag and turns closed minutes into runs.

A tick reads a few offsets from Kafka (never the list of partition keys), records the lag on the topic
asset, evaluates the lag and gold-freshness checks, and asks the planner which minutes to run.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
from confluent_kafka import KafkaException

from stock_platform.orchestration.checks import LagSensorConfig, freshness_evaluations, lag_evaluation
from stock_platform.orchestration.jobs import minute_pipeline_job
from stock_platform.orchestration.planning import LagCursor, MinuteRange, PreviousRun, plan_runs
from stock_platform.partitions import minute_key, minute_partitions
from stock_platform.resources.kafka import KafkaResource, KafkaUnavailable, TopicMisconfigured

SENSOR_NAME = "kafka_lag_sensor"
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


def previous_run(instance: dg.DagsterInstance) -> PreviousRun:
    """The state of the newest run this sensor requested: all its runs execute one at a time, in order."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}), limit=1)
    if not runs:
        return PreviousRun.NONE
    if runs[0].status in IN_FLIGHT:
        return PreviousRun.IN_FLIGHT
    if runs[0].status in FAILED:
        return PreviousRun.FAILED
    return PreviousRun.SUCCEEDED


def run_request(minutes: MinuteRange) -> dg.RunRequest:
    if minutes.first == minutes.last:
        return dg.RunRequest(run_key=minutes.run_key, partition_key=minutes.first)
    return dg.RunRequest(
        run_key=minutes.run_key,
        tags={
            "dagster/asset_partition_range_start": minutes.first,
            "dagster/asset_partition_range_end": minutes.last,
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
    job=minute_pipeline_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every ~10 s: records the ingest group's lag on stock_quotes_topic and requests a run of "
        "minute_pipeline_job for each closed minute not yet ingested (ranges of minutes when behind)."
    ),
)
def kafka_lag_sensor(
    context: dg.SensorEvaluationContext, kafka: KafkaResource, lag_sensor: LagSensorConfig
) -> dg.SensorResult | dg.SkipReason:
    now = now_ms()
    try:
        snapshot = kafka.snapshot(now, recent_ms=lag_sensor.fresh_within_s * 1000)
        # Runs on a topic that keeps producers' clocks would only fail: say what to fix instead.
        kafka.require_append_time()
    except (KafkaUnavailable, KafkaException, TopicMisconfigured) as exc:
        return dg.SkipReason(f"No runs requested: {exc}")

    cursor = LagCursor.from_json(context.cursor)
    plan = plan_runs(
        snapshot.first_pending_ms,
        now,
        cursor,
        previous_run(context.instance),
        grace_ms=int(kafka.grace_seconds * 1000),
        current_minute_has_records=snapshot.current_minute_has_records,
        batch_minutes=lag_sensor.batch_minutes,
        max_runs_per_tick=lag_sensor.max_runs_per_tick,
        retry_after_s=lag_sensor.retry_after_s,
        earliest_key=minute_key(minute_partitions.start),
        next_record_ms=kafka.next_record_ms,
    )
    events: list[Any] = [
        dg.AssetObservation(asset_key="stock_quotes_topic", metadata=lag_metadata(snapshot)),
        lag_evaluation(snapshot.total_lag, lag_sensor.lag_warn_threshold),
        *freshness_evaluations(context.instance, now, snapshot.records_recently, lag_sensor.fresh_within_s),
    ]
    if plan.skip_reason is not None:
        context.log.info(plan.skip_reason)
    return dg.SensorResult(
        run_requests=[run_request(r) for r in plan.ranges],
        cursor=plan.cursor.to_json(),
        asset_events=events,
        skip_reason=plan.skip_reason,
    )
