"""kafka_lag_sensor ticks against the real broker: which runs it requests, what it records, its cursor."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dagster as dg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stock_platform.orchestration import sensors
from stock_platform.orchestration.planning import LagCursor
from stock_platform.orchestration.sensors import LagSensorConfig, kafka_lag_sensor
from stock_platform.partitions import minute_key, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource
from stock_platform.services.process import free_port
from stock_platform_tests.ingestion.ingest_helpers import produce, quote
from stock_platform_tests.kafka_topics import PAST_MINUTES
from stock_platform_tests.orchestration.sensor_requests import minute_requests

pytestmark = pytest.mark.integration

BASE = minute_key(dt.datetime.now(dt.UTC) - dt.timedelta(hours=6))
BASE_MS = minute_window_ms(BASE)[0]
MINUTE_MS = 60_000


@pytest.fixture
def kafka(kafka_broker) -> KafkaResource:
    topic = f"lag-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    return KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        topic=topic,
        ingest_group=f"g-{topic}",
        grace_seconds=10,
        **PAST_MINUTES,
    )


def record_at(ts_ms: int, seq: int, partition: int = 0) -> tuple[int, int, bytes]:
    return partition, ts_ms, encode_record(quote(seq, ts_ms))


def tick(kafka: KafkaResource, now: int, cursor: str | None = None, instance=None, **config):
    clock = [now]  # the tick's clock; a wait for a minute's close advances it instead of sleeping
    sensors.now_ms = lambda: clock[0]  # type: ignore[assignment]
    sensors.sleep_ms = lambda ms: clock.__setitem__(0, clock[0] + ms)  # type: ignore[assignment]
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"kafka": kafka, "lag_sensor": LagSensorConfig(**config)},
    )
    return kafka_lag_sensor(context)


@pytest.fixture(autouse=True)
def real_clock():
    original = sensors.now_ms, sensors.sleep_ms
    yield
    sensors.now_ms, sensors.sleep_ms = original


def keys(result) -> list[str]:
    return [r.run_key for r in minute_requests(result)]


def test_no_lag_requests_nothing_and_records_zero_lag(kafka):
    produce(
        kafka.bootstrap_servers,
        kafka.topic,
        [record_at(BASE_MS + 1_000, 0), record_at(BASE_MS + 2_000, 1, 1)],
    )
    kafka.commit_ends({0: 1, 1: 1})
    result = tick(kafka, BASE_MS + 5 * MINUTE_MS)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == "no lag: the ingest group has committed every record"
    observation = result.asset_events[0]
    assert observation.asset_key == dg.AssetKey("stock_quotes_topic")
    assert observation.metadata["total_lag"].value == 0
    assert result.asset_events[1].passed is True


def test_data_only_in_the_open_minute_requests_nothing(kafka):
    produce(
        kafka.bootstrap_servers,
        kafka.topic,
        [record_at(BASE_MS + 1_000, 0), record_at(BASE_MS + 20_000, 1, 1)],
    )
    result = tick(kafka, BASE_MS + 40_000)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == f"minute {BASE} has records but is not closed yet"
    assert result.asset_events[0].metadata["lag_by_partition"].value == {"0": 1, "1": 1}


def test_several_closed_minutes_get_runs_in_order_with_unique_keys_and_the_cursor_holds(kafka):
    records = [record_at(BASE_MS + m * MINUTE_MS + 5_000, m, m % 2) for m in range(3)]
    produce(kafka.bootstrap_servers, kafka.topic, records)
    now = BASE_MS + 3 * MINUTE_MS + 15_000
    expected = [
        minute_key(dt.datetime.fromtimestamp((BASE_MS + m * MINUTE_MS) / 1000, dt.UTC)) for m in range(3)
    ]

    first = tick(kafka, now)
    assert keys(first) == expected
    assert [r.partition_key for r in minute_requests(first)] == expected
    assert json.loads(first.cursor)["requested_through"] == expected[-1]

    # Same state, next tick: the cursor keeps the requested minutes from being requested again.
    again = tick(kafka, now + 10_000, cursor=first.cursor)
    assert again.run_requests == []

    # A record in the next minute, once that closes, is the only new run.
    produce(kafka.bootstrap_servers, kafka.topic, [record_at(BASE_MS + 3 * MINUTE_MS + 1_000, 3)])
    later = tick(kafka, BASE_MS + 4 * MINUTE_MS + 15_000, cursor=first.cursor)
    assert keys(later) == [minute_key(dt.datetime.fromtimestamp((BASE_MS + 3 * MINUTE_MS) / 1000, dt.UTC))]


def test_far_behind_catches_up_in_batches_and_skips_minutes_without_records(kafka):
    # A record every minute for 2 hours, a silent hour, then 10 more minutes.
    minutes = [*range(120), *range(180, 190)]
    produce(
        kafka.bootstrap_servers,
        kafka.topic,
        [record_at(BASE_MS + m * MINUTE_MS + 1_000, m, m % 2) for m in minutes],
    )
    now = BASE_MS + 190 * MINUTE_MS + 30_000

    result = tick(kafka, now, batch_minutes=60, max_runs_per_tick=4)
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in minute_requests(result)
    ]

    def key(m: int) -> str:
        return minute_key(dt.datetime.fromtimestamp((BASE_MS + m * MINUTE_MS) / 1000, dt.UTC))

    # The silent hour (minutes 120-179) gets no run.
    assert ranges == [(key(0), key(59)), (key(60), key(119)), (key(180), key(189))]
    assert keys(result) == [f"{a}...{b}" for a, b in ranges]


def test_broker_down_is_a_skip_with_a_reason_not_an_error():
    down = KafkaResource(
        bootstrap_servers=f"127.0.0.1:{free_port()}", topic="stock-quotes", timeout_seconds=2
    )
    result = tick(down, BASE_MS)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith("No runs requested: Kafka at 127.0.0.1:")
    assert "did not answer" in result.skip_message


def test_a_missing_topic_is_a_skip_saying_so(kafka_broker):
    missing = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, topic=f"absent-{uuid.uuid4().hex[:6]}"
    )
    result = tick(missing, BASE_MS)
    assert isinstance(result, dg.SkipReason)
    assert (
        f"topic '{missing.topic}' does not exist on {kafka_broker.bootstrap_servers} yet"
        in result.skip_message
    )


def test_cursor_survives_a_round_trip_through_the_sensor(kafka):
    produce(kafka.bootstrap_servers, kafka.topic, [record_at(BASE_MS + 1_000, 0)])
    cursor = LagCursor(requested_through=None, attempt=0, retried_at_ms=0).to_json()
    result = tick(kafka, BASE_MS + MINUTE_MS + 15_000, cursor=cursor)
    after = LagCursor.from_json(result.cursor)
    assert (after.requested_through, after.attempt, after.retried_at_ms) == (BASE, 0, 0)
    assert after.reported_minute is not None  # the tick recorded its lag: the first of its minute
    assert LagCursor.from_json(after.to_json()) == after
