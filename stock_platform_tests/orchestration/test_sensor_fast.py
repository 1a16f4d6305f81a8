"""kafka_lag_sensor's requests over the in-memory Kafka topic: run keys, partitions, ranges, skip reasons,
retries, and the loop of ticks and runs that ends with every record loaded once.

The real sensor is evaluated with ``dg.build_sensor_context``; only the broker is replaced (see
stock_platform_tests/fake_kafka.py). The same ticks against the real broker: test_lag_sensor.py.
"""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.orchestration import sensors
from stock_platform.orchestration.planning import LagCursor, last_closed_minute
from stock_platform.orchestration.sensors import SENSOR_NAME, LagSensorConfig, kafka_lag_sensor
from stock_platform.partitions import minute_key, minute_partitions, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform_tests.fake_kafka import FakeCluster, FakeKafkaResource
from stock_platform_tests.ingestion.in_memory_platform import RANGE_END, RANGE_START, Platform
from stock_platform_tests.ingestion.ingest_helpers import quote
from stock_platform_tests.orchestration.sensor_requests import minute_requests

BASE = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=6)
BASE_MS = int(BASE.timestamp() * 1000)
MINUTE_MS = 60_000


def key(m: int) -> str:
    return minute_key(BASE + dt.timedelta(minutes=m))


def append_at(cluster: FakeCluster, m: int, second: int, partition: int = 0) -> None:
    ts = BASE_MS + m * MINUTE_MS + second * 1000
    cluster.append(partition, ts, encode_record(quote(m * 100 + second, ts)))


def tick(
    kafka: FakeKafkaResource,
    now: int,
    monkeypatch: pytest.MonkeyPatch,
    cursor: str | None = None,
    instance: dg.DagsterInstance | None = None,
    **config,
):
    clock = [now]  # the tick's clock; a wait for a minute's close advances it instead of sleeping
    monkeypatch.setattr(sensors, "now_ms", lambda: clock[0])
    monkeypatch.setattr(sensors, "sleep_ms", lambda ms: clock.__setitem__(0, clock[0] + ms))
    context = dg.build_sensor_context(
        instance=instance or dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"kafka": kafka, "lag_sensor": LagSensorConfig(**config)},
    )
    return kafka_lag_sensor(context)


def run_keys(result) -> list[str]:
    return [r.run_key for r in minute_requests(result)]


def test_no_lag_requests_nothing_and_records_zero_lag(monkeypatch):
    cluster = FakeCluster()
    append_at(cluster, 0, 1)
    append_at(cluster, 0, 2, partition=1)
    kafka = cluster.resource()
    kafka.commit_ends({0: 1, 1: 1})

    result = tick(kafka, BASE_MS + 5 * MINUTE_MS, monkeypatch)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == "no lag: the ingest group has committed every record"
    observation = result.asset_events[0]
    assert observation.asset_key == dg.AssetKey("stock_quotes_topic")
    assert observation.metadata["total_lag"].value == 0
    assert observation.metadata["high_watermarks"].value == {"0": 1, "1": 1}


def test_records_only_in_the_open_minute_request_nothing(monkeypatch):
    cluster = FakeCluster()
    append_at(cluster, 0, 1)
    append_at(cluster, 0, 20, partition=1)

    result = tick(cluster.resource(), BASE_MS + 40_000, monkeypatch)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == f"minute {key(0)} has records but is not closed yet"
    assert result.asset_events[0].metadata["lag_by_partition"].value == {"0": 1, "1": 1}


def test_a_minute_closes_by_records_past_its_end_or_by_the_grace_period(monkeypatch):
    cluster = FakeCluster()
    append_at(cluster, 0, 5)
    append_at(cluster, 1, 1)  # partition 0 has moved on; partition 1 has no record past minute 0
    kafka = cluster.resource(grace_seconds=10)

    within_grace = tick(kafka, BASE_MS + MINUTE_MS + 5_000, monkeypatch)
    assert within_grace.run_requests == []
    after_grace = tick(kafka, BASE_MS + MINUTE_MS + 10_000, monkeypatch)
    assert run_keys(after_grace) == [key(0)]

    append_at(cluster, 1, 2, partition=1)  # now every partition is past minute 0
    by_records = tick(kafka, BASE_MS + MINUTE_MS + 5_000, monkeypatch)
    assert run_keys(by_records) == [key(0)]


def test_closed_minutes_get_one_run_each_in_order_and_are_not_requested_twice(monkeypatch):
    cluster = FakeCluster()
    for m in range(3):
        append_at(cluster, m, 5, partition=m % 2)
    kafka = cluster.resource()
    now = BASE_MS + 3 * MINUTE_MS + 15_000

    first = tick(kafka, now, monkeypatch)
    assert run_keys(first) == [key(0), key(1), key(2)]
    assert [r.partition_key for r in minute_requests(first)] == [key(0), key(1), key(2)]
    assert json.loads(first.cursor)["requested_through"] == key(2)

    assert tick(kafka, now + 10_000, monkeypatch, cursor=first.cursor).run_requests == []

    append_at(cluster, 3, 1)
    later = tick(kafka, BASE_MS + 4 * MINUTE_MS + 15_000, monkeypatch, cursor=first.cursor)
    assert run_keys(later) == [key(3)]


def test_far_behind_catches_up_in_batches_of_ranges_and_skips_silent_minutes(monkeypatch):
    cluster = FakeCluster()
    for m in [*range(120), *range(180, 190)]:  # two hours, a silent hour, ten more minutes
        append_at(cluster, m, 1, partition=m % 2)
    now = BASE_MS + 190 * MINUTE_MS + 30_000

    result = tick(cluster.resource(), now, monkeypatch, batch_minutes=60, max_runs_per_tick=4)
    ranges = [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in minute_requests(result)]
    assert ranges == [(key(0), key(59)), (key(60), key(119)), (key(180), key(189))]
    assert run_keys(result) == [f"{a}...{b}" for a, b in ranges]
    assert all(r.partition_key is None for r in minute_requests(result))

    capped = tick(cluster.resource(), now, monkeypatch, batch_minutes=30, max_runs_per_tick=2)
    assert run_keys(capped) == [f"{key(0)}...{key(29)}", f"{key(30)}...{key(59)}"]
    assert json.loads(capped.cursor)["requested_through"] == key(59)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"reachable": False}, "No runs requested: Kafka at memory://"),
        ({"topic": "other-topic"}, "No runs requested: topic 'stock-quotes' does not exist on memory://"),
        ({"append_time": False}, "stamps records with their producers' clocks; run `stock-platform topic"),
    ],
    ids=["broker down", "topic missing", "topic keeps producer clocks"],
)
def test_what_stops_the_sensor_is_a_skip_saying_what_to_fix(monkeypatch, change, expected):
    cluster = FakeCluster(**{k: v for k, v in change.items() if k == "topic"})
    append_at(cluster, 0, 1)
    kafka = cluster.resource(topic="stock-quotes")
    for name, value in change.items():
        if name != "topic":
            setattr(cluster, name, value)

    result = tick(kafka, BASE_MS + 5 * MINUTE_MS, monkeypatch)
    assert isinstance(result, dg.SkipReason)
    assert expected in result.skip_message, result.skip_message


def run_requested(platform: Platform, instance, request: dg.RunRequest, load_fails: bool = False):
    """Execute a request the way the daemon would: the ingestion assets, tagged as the sensor's run."""
    return platform.run(
        request.partition_key or request.tags[RANGE_START],
        request.tags.get(RANGE_END),
        load_fails=load_fails,
        instance=instance,
        tags={"dagster/sensor_name": SENSOR_NAME, "dagster/run_key": request.run_key},
    )


def test_ticks_and_runs_converge_after_a_failed_run_with_every_record_loaded_once(monkeypatch, tmp_path):
    """The sensor's whole loop: requests, a failed run, the wait, the retry under new run keys, and the
    end state, each record in the raw table exactly once and the group at the high watermark."""
    platform = Platform(tmp_path)
    cluster, kafka = platform.cluster, platform.resources["kafka"]
    for m in range(3):
        append_at(cluster, m, 5, partition=m % 2)
        append_at(cluster, m, 40, partition=0)
    instance = dg.DagsterInstance.ephemeral()
    now = BASE_MS + 3 * MINUTE_MS + 15_000

    def ticks(at: int, cursor: str | None):
        return tick(kafka, at, monkeypatch, cursor=cursor, instance=instance, retry_after_s=30)

    def run_all(result, failing: str | None = None) -> list[bool]:
        return [
            run_requested(platform, instance, r, load_fails=r.partition_key == failing).success
            for r in minute_requests(result)
        ]

    first = ticks(now, None)
    assert run_keys(first) == [key(0), key(1), key(2)]
    # Minute 1's load fails, so minute 2, loaded, may not commit past it: its run fails too.
    assert run_all(first, failing=key(1)) == [True, False, False]

    retry = ticks(now + 10_000, first.cursor)  # the first retry is not delayed
    assert run_keys(retry) == [f"{key(1)}#retry1", f"{key(2)}#retry1"]
    assert run_all(retry, failing=key(1)) == [False, False]

    waiting = ticks(now + 20_000, retry.cursor)
    assert waiting.run_requests == []
    assert (
        waiting.skip_reason.skip_message == f"the run for minutes from {key(1)} failed; retrying after 30 s"
    )

    second = ticks(now + 45_000, retry.cursor)
    assert run_keys(second) == [f"{key(1)}#retry2", f"{key(2)}#retry2"]
    assert run_all(second) == [True, True]

    done = ticks(now + 50_000, second.cursor)
    assert done.skip_reason.skip_message == "no lag: the ingest group has committed every record"
    assert cluster.committed == cluster.high() == {0: 5, 1: 1}
    assert platform.loaded() == [(0, o) for o in range(5)] + [(1, 0)]


def test_records_from_before_the_partitions_window_are_taken_in_by_its_first_minute(monkeypatch, tmp_path):
    """A topic older than the moving window start: its first minute runs even without records of its own,
    and reads from the group's position, so nothing appended earlier is left behind."""
    platform = Platform(tmp_path)
    first = minute_key(minute_partitions.start)
    start_ms = minute_window_ms(first)[0]
    for ts in (start_ms - 3_600_000, start_ms - 60_000):  # an hour and a minute before the window
        platform.cluster.append(0, ts, encode_record(quote(ts, ts)))

    result = tick(platform.resources["kafka"], start_ms + 2 * MINUTE_MS + 15_000, monkeypatch)
    assert [(r.run_key, r.partition_key) for r in minute_requests(result)] == [(first, first)]

    assert platform.run(first).success
    assert platform.loaded() == [(0, 0), (0, 1)]
    assert platform.cluster.committed == {0: 2, 1: 0}


class _Clock:
    """The sensor's clock and wait: waiting advances it."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.waited = 0

    def sleep(self, ms: int) -> None:
        assert ms >= 0, "the sensor never waits a negative time"
        self.now += ms
        self.waited += ms


@given(
    offset_ms=st.integers(min_value=0, max_value=3 * MINUTE_MS),
    grace_ms=st.integers(min_value=0, max_value=20_000),
    records_after_ms=st.none() | st.integers(min_value=0, max_value=30_000),
    backlog=st.booleans(),
    look_ms=st.integers(min_value=0, max_value=300),
)
@settings(max_examples=400, deadline=None)
def test_a_tick_near_a_minutes_end_plans_from_a_look_at_which_that_minute_is_closed(
    offset_ms: int, grace_ms: int, records_after_ms: int | None, backlog: bool, look_ms: int
) -> None:
    """Whatever the tick's time, grace and the moment every partition has a record of the new minute
    (None: a partition stays idle): a tick within ALIGN_WITHIN_S of an end looks at Kafka at once, and
    when that look shows no runs due (no backlog), looks again only once that minute is closed by the
    planner's own rule, and waits no longer than needed; a tick with runs due, and a tick far from an
    end, never waits. A look takes ``look_ms``."""
    start = BASE_MS + offset_ms
    clock = _Clock(start)
    end = (start // MINUTE_MS + 1) * MINUTE_MS
    looks: list[int] = []
    asked: list[int] = []

    def snapshot_at(at: int) -> SimpleNamespace:
        assert at == clock.now, "the snapshot is taken at the time the tick plans with"
        looks.append(at)
        has = records_after_ms is not None and at >= end + records_after_ms
        clock.now += look_ms
        return SimpleNamespace(current_minute_has_records=has)

    def runs_due(at: int, snapshot: SimpleNamespace) -> bool:
        asked.append(at)
        return backlog

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sensors, "now_ms", lambda: clock.now)
        mp.setattr(sensors, "sleep_ms", clock.sleep)
        at, snapshot = sensors.wait_for_close(start, grace_ms, snapshot_at, runs_due)

    assert at == looks[-1]
    assert looks[0] == start
    if end - start > sensors.ALIGN_WITHIN_S * 1000 or backlog:
        assert looks == [start] and clock.waited == 0
        return
    assert asked == [start], "only the first look is asked whether runs are due"
    ended = minute_key(dt.datetime.fromtimestamp((end - MINUTE_MS) / 1000, dt.UTC))
    assert last_closed_minute(at, grace_ms, snapshot.current_minute_has_records) >= ended
    first_after = max(end + sensors.SETTLE_MS, start + look_ms)
    assert looks[1] == first_after
    assert at <= max(end + grace_ms, first_after) + look_ms
    # Polled, not busy: looks at least POLL_MS apart, except the last one, taken at the grace's end.
    gaps = [b - a for a, b in zip(looks[1:], looks[2:], strict=False)]
    assert all(g >= sensors.POLL_MS for g in gaps[:-1]) and all(g > 0 for g in gaps)
    if records_after_ms is not None and end + records_after_ms <= first_after:
        assert at == first_after, "closed by records at the first look after the end: no second wait"
    elif records_after_ms is not None and records_after_ms < grace_ms:
        # Closed by its records: the tick plans within one poll (and one look) of their being visible.
        assert end + records_after_ms <= at < end + records_after_ms + sensors.POLL_MS + look_ms


@given(
    backlog_minutes=st.integers(min_value=0, max_value=12),
    before_end_ms=st.integers(min_value=1, max_value=int(sensors.ALIGN_WITHIN_S * 1000)),
)
@settings(max_examples=40, deadline=None)
def test_a_tick_near_a_close_requests_a_backlog_at_once_and_waits_only_without_one(
    backlog_minutes: int, before_end_ms: int
) -> None:
    """Minutes 0..19 hold records, and the ingest group committed all but the last ``backlog_minutes`` of
    the closed ones (0: caught up, only the open minute 20 is pending). A tick ``before_end_ms`` before
    minute 20's end requests the backlog without waiting for that end; caught up, it waits for the end
    and requests the minute that closed."""
    cluster = FakeCluster()
    for m in range(21):
        append_at(cluster, m, 5, partition=m % 2)
    kafka = cluster.resource()
    committed = 20 - backlog_minutes  # minutes 0..committed-1 are ingested
    kafka.commit_ends({0: (committed + 1) // 2, 1: committed // 2})
    cursor = LagCursor(requested_through=key(committed - 1)).to_json()
    start = BASE_MS + 21 * MINUTE_MS - before_end_ms
    clock = _Clock(start)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sensors, "now_ms", lambda: clock.now)
        mp.setattr(sensors, "sleep_ms", clock.sleep)
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(),
            cursor=cursor,
            resources={"kafka": kafka, "lag_sensor": LagSensorConfig()},
        )
        result = kafka_lag_sensor(context)
    requested = [
        (r.partition_key or r.tags[RANGE_START], r.partition_key or r.tags[RANGE_END])
        for r in minute_requests(result)
    ]
    grace_ms = int(kafka.grace_seconds * 1000)
    if backlog_minutes == 0 or (backlog_minutes == 1 and before_end_ms + grace_ms >= MINUTE_MS):
        # Nothing closed is waiting at the first look: the tick waits for minute 20 to close.
        assert clock.waited > 0
        assert requested and requested[-1][1] == key(20)
    else:
        assert clock.waited == 0, "a backlog is requested at once"
        assert requested[0][0] == key(committed)
        assert key(20) not in {last for _, last in requested}, "the open minute is left to a later tick"


def test_dbt_tests_runs_follow_a_minute_run_every_block_and_the_report_is_once_a_minute(monkeypatch):
    """Ticks every 5 s over 40 minutes of quotes: each minute gets its run; a dbt_tests_job run is
    requested after the minute run that ends a block of ``tests_every_minutes``, over the minutes since the
    last one; the lag observation and check evaluations are recorded once per minute, not every tick."""
    every = 7
    cluster = FakeCluster()
    for m in range(41):
        append_at(cluster, m, 5, partition=m % 2)
    kafka = cluster.resource()
    cursor = None
    minute_runs: list[str] = []
    tests_runs: list[tuple[str, str]] = []
    reports: list[str] = []
    instance = dg.DagsterInstance.ephemeral()
    for at in range(BASE_MS + MINUTE_MS + 15_000, BASE_MS + 40 * MINUTE_MS + 50_000, 5_000):
        result = tick(kafka, at, monkeypatch, cursor=cursor, instance=instance, tests_every_minutes=every)
        cursor = result.cursor
        jobs = [r.job_name for r in result.run_requests]
        assert jobs == sorted(jobs, key=lambda j: j == "dbt_tests_job")  # tests after the minute runs
        for request in result.run_requests:
            if request.job_name == "dbt_tests_job":
                first = request.partition_key or request.tags[RANGE_START]
                tests_runs.append((first, request.partition_key or request.tags[RANGE_END]))
            else:
                minute_runs.append(request.partition_key)
        if result.asset_events:
            reports.append(json.loads(cursor)["reported_minute"])
    assert minute_runs == [key(m) for m in range(40)]
    index0 = int(BASE.timestamp()) // 60
    ends = [m for m in range(40) if (index0 + m + 1) % every == 0]
    # No tests run before the first block end (counting starts in the block in progress).
    # Counting starts at the block in progress at the first request (minute 0's), whose end is baseline.
    baseline = (index0 + 1) // every * every - 1 - index0
    due = [m for m in ends if m > baseline]
    assert [last for _, last in tests_runs] == [key(m) for m in due]
    assert [first for first, _ in tests_runs] == [key(m + 1) for m in [baseline, *due[:-1]]]
    # One report per minute of the sensor's clock (ticks from minute 1 to 40), no more.
    assert reports == [key(m) for m in range(1, 41)]
