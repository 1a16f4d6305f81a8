"""A minute from Kafka to the raw object and the raw table, against a real broker, S3 server and DuckDB."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.ingestion import assets
from stock_platform.ingestion.minute_object import MinuteTarget, staging_paths, write_minute_group_in_worker
from stock_platform.object_keys import batch_manifest_key, dead_letter_object_key, minute_iso, raw_object_key
from stock_platform.partitions import minute_window, minute_window_ms
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import KafkaResource, KafkaUnavailable, MinuteNotClosed
from stock_platform.resources.kafka_reader import ReadStalled
from stock_platform.resources.object_store import ObjectNotFound, S3ObjectStore
from stock_platform.resources.warehouse import Warehouse
from stock_platform_tests.ingestion.ingest_helpers import (
    ASSETS,
    closed_minute,
    make_resources,
    produce,
    quote,
    valid_messages,
)
from stock_platform_tests.kafka_topics import PAST_MINUTES

pytestmark = pytest.mark.integration

ENVELOPE_FIELDS = [
    "minute",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp_ms",
    "object_key",
    "quote",
]


def materialize(
    resources: dict, partition_key: str, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS, partition_key=partition_key, resources=resources, raise_on_error=raise_on_error
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def first_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The metadata of the asset's first materialization: a range run gives each of its minutes the same."""
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def table_rows(db_path: Path, partition_key: str) -> list[tuple[int, int, str]]:
    minute = minute_window(partition_key)[0].replace(tzinfo=None)
    with duckdb.connect(str(db_path), read_only=True) as conn:
        return conn.execute(
            """select kafka_partition, kafka_offset, v::varchar from main.bronze_stock_quotes_raw
               where minute = ? order by 1, 2""",
            [minute],
        ).fetchall()


def gzip_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def test_minute_is_loaded_exactly_once_however_often_it_runs(kafka_broker, new_topic, tmp_path):
    topic = new_topic(2)
    key = closed_minute(30)
    previous, following = closed_minute(31), closed_minute(29)
    start_ms, end_ms = minute_window_ms(key)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(previous, 3, seq_start=1000))
    produce(
        kafka_broker.bootstrap_servers,
        topic,
        [
            (1, start_ms, encode_record(quote(1, start_ms))),  # first instant of the minute
            *valid_messages(key, 40, seq_start=10),
            (0, start_ms + 100, b"not json"),
            (1, start_ms + 200, json.dumps({"symbol": "AAPL"}).encode()),
            (0, end_ms - 1, encode_record(quote(2, end_ms - 1))),  # last instant of the minute
        ],
    )
    produce(kafka_broker.bootstrap_servers, topic, [(0, end_ms, encode_record(quote(3, end_ms))),
                                                    *valid_messages(following, 4, seq_start=2000)])  # fmt: skip
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    # A fresh group stands at the low watermark: the minute before must be loaded for this one to commit.
    materialize(resources, previous)
    assert len(table_rows(tmp_path / "warehouse.duckdb", previous)) == 3

    result = materialize(resources, key)

    batch = metadata(result, "kafka_quote_batch")
    # Partition 0: 2 of the previous minute, then 20 valid + 1 bad + 1 last-instant; partition 1: 1 of the
    # previous minute, then 1 first-instant + 20 valid + 1 bad.
    assert batch["offset_ranges"] == {key: {"0": [2, 24], "1": [1, 23]}}
    assert batch["records"] == 44
    assert batch["closed_by"] == "records"
    obj = metadata(result, "raw_quote_object")
    assert (obj["rows"], obj["dead_lettered_rows"]) == (42, 2)
    assert obj["object_key"] == raw_object_key(topic, key)
    assert obj["min_event_time"] == minute_window(key)[0].isoformat(timespec="milliseconds")
    assert obj["max_event_time"].endswith(":59.999+00:00")
    assert obj["bytes"] == (tmp_path / "lake" / raw_object_key(topic, key)).stat().st_size
    assert metadata(result, "raw_quote_table")["rows"] == 42
    assert checks(result) == {
        "no_dead_letters": False,
        "rows_match_raw_object": True,
        "warehouse_has_every_lake_minute": True,
    }

    lines = gzip_lines(tmp_path / "lake" / raw_object_key(topic, key))
    assert len(lines) == 42
    assert all(list(line) == ENVELOPE_FIELDS for line in lines)
    assert {line["minute"] for line in lines} == {minute_window(key)[0].strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert all(start_ms <= line["kafka_timestamp_ms"] < end_ms for line in lines)
    assert all(line["quote"]["fetched_at"] == line["kafka_timestamp_ms"] for line in lines)
    dead = gzip_lines(tmp_path / "lake" / dead_letter_object_key(topic, key))
    dead.sort(key=lambda d: d["kafka_partition"])
    assert [(d["kafka_partition"], d["kafka_offset"], d["payload"]) for d in dead] == [
        (0, 22, "not json"),
        (1, 22, '{"symbol": "AAPL"}'),
    ]
    assert dead[0]["reason"].startswith("not JSON")
    assert dead[1]["reason"].startswith("missing field(s): schema_version")

    first = table_rows(tmp_path / "warehouse.duckdb", key)
    assert len(first) == 42 and len({(p, o) for p, o, _ in first}) == 42
    assert sorted(json.loads(v)["kafka_offset"] for _, _, v in first) == sorted(o for _, o, _ in first)

    materialize(resources, key)
    assert table_rows(tmp_path / "warehouse.duckdb", key) == first

    store = resources["object_store"]
    store.delete(raw_object_key(topic, key))
    store.delete(batch_manifest_key(topic, key))
    materialize(resources, key)
    assert table_rows(tmp_path / "warehouse.duckdb", key) == first
    assert len(gzip_lines(tmp_path / "lake" / raw_object_key(topic, key))) == 42

    materialize(resources, previous)
    assert len(table_rows(tmp_path / "warehouse.duckdb", previous)) == 3
    assert len(table_rows(tmp_path / "warehouse.duckdb", key)) == 42
    assert resources["kafka"].committed_offsets() == {0: 24, 1: 23}


def test_open_minute_is_refused_with_a_clear_message(kafka_broker, new_topic, tmp_path):
    # Dagster only offers a minute once it has ended, so the open case it can launch is a minute that
    # ended less than a grace period ago with a partition silent since; a long grace makes that certain.
    topic = new_topic(1)
    key = closed_minute(1)
    start_ms, _ = minute_window_ms(key)
    produce(kafka_broker.bootstrap_servers, topic, [(0, start_ms, encode_record(quote(1, start_ms)))])
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    resources["kafka"] = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic, grace_seconds=180, **PAST_MINUTES
    )

    result = materialize(resources, key, raise_on_error=False)

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "kafka_quote_batch"
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(
        f"Refusing an open minute: minute {key} is not closed yet: partition(s) [0]"
    )
    assert not resources["object_store"].exists(batch_manifest_key(topic, key))
    assert not resources["object_store"].exists(raw_object_key(topic, key))


def test_minute_closes_by_records_past_its_end_or_by_the_grace_period(kafka_broker, new_topic):
    topic = new_topic(2)
    key = closed_minute(20)
    start_ms, end_ms = minute_window_ms(key)
    produce(kafka_broker.bootstrap_servers, topic, [*valid_messages(key, 4), (0, end_ms + 5, b"next minute")])
    kafka = KafkaResource(bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic, grace_seconds=10)

    with pytest.raises(MinuteNotClosed, match=r"partition\(s\) \[1\] .* no record past its end"):
        kafka.minute_batch(key, now_ms=end_ms + 9_000)
    by_grace = kafka.minute_batch(key, now_ms=end_ms + 10_000)
    assert (by_grace.closed_by, by_grace.ranges_text()) == ("grace", "0:0-2,1:0-2")
    with pytest.raises(MinuteNotClosed, match="still open"):
        kafka.minute_batch(key, now_ms=end_ms - 1)

    produce(kafka_broker.bootstrap_servers, topic, [(1, end_ms + 7, b"next minute")])
    by_records = kafka.minute_batch(key, now_ms=end_ms + 1)
    assert (by_records.closed_by, by_records.ranges_text()) == ("records", "0:0-2,1:0-2")


class BrokenWarehouse(Warehouse):
    def load_minutes(self, topic, files):
        # Not retried: this test is about what is committed when the load fails, not about retries.
        raise dg.Failure("warehouse unavailable", allow_retries=False)


def test_offsets_are_committed_only_after_the_load_and_never_rewound(kafka_broker, new_topic, tmp_path):
    topic = new_topic(2)
    earlier, key, later = closed_minute(12), closed_minute(11), closed_minute(10)
    for minute, count in ((earlier, 2), (key, 6), (later, 2)):
        produce(kafka_broker.bootstrap_servers, topic, valid_messages(minute, count))
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    kafka: KafkaResource = resources["kafka"]

    # A fresh group stands at the low watermark: the earlier minute first, or nothing after it commits.
    refused = materialize(resources, key, raise_on_error=False)
    assert not refused.success
    assert kafka.committed_offsets() == {0: None, 1: None}
    assert metadata(materialize(resources, earlier), "raw_quote_table")["committed_offsets"] == {
        "0": 1,
        "1": 1,
    }

    failed = materialize({**resources, "warehouse": BrokenWarehouse()}, key, raise_on_error=False)
    assert not failed.success
    assert kafka.committed_offsets() == {0: 1, 1: 1}
    assert [(lag.partition, lag.lag) for lag in kafka.consumer_lag()] == [(0, 4), (1, 4)]

    result = materialize(resources, key)
    assert metadata(result, "raw_quote_table")["committed_offsets"] == {"0": 4, "1": 4}
    assert kafka.committed_offsets() == {0: 4, 1: 4}
    assert [(lag.partition, lag.lag) for lag in kafka.consumer_lag()] == [(0, 1), (1, 1)]
    later_start, _ = minute_window_ms(later)
    assert kafka.first_pending_timestamps() == {0: later_start, 1: later_start + 29_500}

    rerun_earlier = materialize(resources, earlier)
    assert metadata(rerun_earlier, "raw_quote_table")["committed_offsets"] == {}
    assert kafka.committed_offsets() == {0: 4, 1: 4}

    materialize(resources, later)
    assert kafka.committed_offsets() == {0: 5, 1: 5}
    assert [lag.lag for lag in kafka.consumer_lag()] == [0, 0]
    assert kafka.first_pending_timestamps() == {}


def test_offsets_never_skip_a_minute_that_is_not_loaded(kafka_broker, new_topic, tmp_path):
    topic = new_topic(2)
    first, second, third = closed_minute(22), closed_minute(21), closed_minute(20)
    for minute in (first, second, third):
        produce(kafka_broker.bootstrap_servers, topic, valid_messages(minute, 4))
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    kafka: KafkaResource = resources["kafka"]
    materialize(resources, first)
    assert kafka.committed_offsets() == {0: 2, 1: 2}

    # The second minute's run failed (or has not run): loading the third must not commit past it.
    skipped = materialize(resources, third, raise_on_error=False)
    assert not skipped.success
    [failure] = [e for e in skipped.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "earlier minutes are loaded" in failure.event_specific_data.error.message
    assert "partition 0 offsets 2-4, partition 1 offsets 2-4" in failure.event_specific_data.error.message
    assert kafka.committed_offsets() == {0: 2, 1: 2}

    materialize(resources, second)
    assert kafka.committed_offsets() == {0: 4, 1: 4}
    materialize(resources, third)
    assert kafka.committed_offsets() == {0: 6, 1: 6}
    assert len(table_rows(tmp_path / "warehouse.duckdb", third)) == 4


def test_a_record_arriving_after_its_minute_was_ingested_is_loaded_by_rerunning_that_minute(
    kafka_broker, new_topic, tmp_path
):
    topic = new_topic(1)
    closed, next_minute = closed_minute(26), closed_minute(25)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(closed, 3, partitions=1))
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    kafka: KafkaResource = resources["kafka"]
    materialize(resources, closed)
    assert kafka.committed_offsets() == {0: 3}

    # Stamped in the ingested minute, it reaches Kafka only now, ahead of the next minute's records.
    late_ts = minute_window_ms(closed)[0] + 59_000
    produce(kafka_broker.bootstrap_servers, topic, [(0, late_ts, encode_record(quote(100, late_ts)))])
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(next_minute, 2, partitions=1, seq_start=10))

    # The next minute loads, but committing it would skip the late record: refused, nothing skipped.
    assert not materialize(resources, next_minute, raise_on_error=False).success
    assert kafka.committed_offsets() == {0: 3}
    assert kafka.first_pending_timestamps() == {0: late_ts}  # so the lag sensor re-runs its minute

    # Its minute's offset range now ends after it: the re-run replaces the minute with all four records.
    materialize(resources, closed)
    assert [offset for _, offset, _ in table_rows(tmp_path / "warehouse.duckdb", closed)] == [0, 1, 2, 3]
    materialize(resources, next_minute)
    assert kafka.committed_offsets() == {0: 6}
    assert [offset for _, offset, _ in table_rows(tmp_path / "warehouse.duckdb", next_minute)] == [4, 5]


def test_a_catch_up_run_loads_several_minutes_at_once(kafka_broker, new_topic, tmp_path):
    topic = new_topic(1)
    minutes = [closed_minute(m) for m in (43, 42, 41)]
    for i, minute in enumerate(minutes):
        produce(kafka_broker.bootstrap_servers, topic, valid_messages(minute, 5 + i, partitions=1))
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)

    result = dg.materialize(
        ASSETS,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": minutes[0],
            "dagster/asset_partition_range_end": minutes[-1],
        },
    )

    table = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "raw_quote_table"
    ]
    assert sorted(e.partition for e in table) == minutes
    assert [len(table_rows(tmp_path / "warehouse.duckdb", m)) for m in minutes] == [5, 6, 7]
    assert resources["kafka"].committed_offsets() == {0: 18}


def test_s3_object_store_holds_the_minute_and_a_rerun_rebuilds_it(
    kafka_broker, s3_server, new_topic, tmp_path
):
    topic = new_topic(2)
    key = closed_minute(25)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(key, 9))
    store = S3ObjectStore(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"raw-{uuid.uuid4().hex[:12]}",
    )
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path, object_store=store)

    result = materialize(resources, key)

    object_key = raw_object_key(topic, key)
    assert metadata(result, "raw_quote_object")["object_uri"] == f"s3://{store.bucket}/{object_key}"
    assert store.metadata(object_key) == {
        "topic": topic,
        "minute": minute_window(key)[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kafka-offsets": "0:0-5,1:0-4",
        "rows": "9",
        "dead-lettered": "0",
    }
    assert len(gzip.decompress(store.get_bytes(object_key)).splitlines()) == 9
    assert not store.exists(dead_letter_object_key(topic, key))
    first = table_rows(tmp_path / "warehouse.duckdb", key)
    assert len(first) == 9

    store.delete(object_key)
    assert not store.exists(object_key)
    materialize(resources, key)
    assert table_rows(tmp_path / "warehouse.duckdb", key) == first
    assert store.exists(object_key)


def test_a_minute_without_quotes_is_an_empty_success(kafka_broker, new_topic, tmp_path):
    topic = new_topic(1)
    before, empty, after = closed_minute(52), closed_minute(51), closed_minute(50)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(before, 2, partitions=1))
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(after, 3, partitions=1))
    resources = make_resources(kafka_broker.bootstrap_servers, topic, tmp_path)
    materialize(resources, before)  # a fresh group stands at the low watermark: the minute before first

    result = materialize(resources, empty)

    assert metadata(result, "kafka_quote_batch")["offset_ranges"] == {empty: {"0": [2, 2]}}
    assert (metadata(result, "raw_quote_object")["rows"], metadata(result, "raw_quote_table")["rows"]) == (
        0,
        0,
    )
    assert gzip_lines(tmp_path / "lake" / raw_object_key(topic, empty)) == []
    assert table_rows(tmp_path / "warehouse.duckdb", empty) == []
    assert checks(result) == {
        "no_dead_letters": True,
        "rows_match_raw_object": True,
        "warehouse_has_every_lake_minute": True,
    }
    assert resources["kafka"].committed_offsets() == {0: 2}


def test_parallel_read_workers_build_the_same_minute(kafka_broker, new_topic, tmp_path):
    topic = new_topic(2)
    key = closed_minute(45)
    start_ms, _ = minute_window_ms(key)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(key, 50))
    produce(kafka_broker.bootstrap_servers, topic, [(p, start_ms + 59_000, b"{}") for p in (0, 1, 1)])
    bootstrap = kafka_broker.bootstrap_servers

    single = make_resources(bootstrap, topic, tmp_path / "single")
    single["kafka"] = KafkaResource(bootstrap_servers=bootstrap, topic=topic, read_workers=1, **PAST_MINUTES)
    parallel = make_resources(bootstrap, topic, tmp_path / "parallel")
    parallel["kafka"] = KafkaResource(
        bootstrap_servers=bootstrap, topic=topic, read_workers=3, parallel_read_threshold=1, **PAST_MINUTES
    )
    one, three = materialize(single, key), materialize(parallel, key)

    for field in ("rows", "dead_lettered_rows", "offset_ranges", "min_event_time", "max_event_time"):
        assert metadata(one, "raw_quote_object")[field] == metadata(three, "raw_quote_object")[field], field
    assert (
        metadata(three, "raw_quote_object")["rows"],
        metadata(three, "raw_quote_object")["dead_lettered_rows"],
    ) == (
        50,
        3,
    )
    assert table_rows(tmp_path / "single" / "warehouse.duckdb", key) == table_rows(
        tmp_path / "parallel" / "warehouse.duckdb", key
    )
    raw_key, dead_key = raw_object_key(topic, key), dead_letter_object_key(topic, key)
    for object_key in (raw_key, dead_key):
        lines = [
            sorted(map(json.dumps, gzip_lines(tmp_path / run / "lake" / object_key)))
            for run in ("single", "parallel")
        ]
        assert lines[0] == lines[1]


def test_a_missing_topic_or_broker_is_reported_clearly(kafka_broker, s3_server):
    missing = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap_servers, topic=f"absent-{uuid.uuid4().hex}"
    )
    with pytest.raises(KafkaUnavailable, match=r"topic 'absent-\w+' does not exist on 127\.0\.0\.1:\d+ yet"):
        missing.consumer_lag()
    down = KafkaResource(bootstrap_servers="127.0.0.1:9", topic="stock-quotes", timeout_seconds=1)
    with pytest.raises(KafkaUnavailable, match=r"Kafka at 127\.0\.0\.1:9 did not answer"):
        down.minute_batch(closed_minute(5))

    store = S3ObjectStore(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"raw-{uuid.uuid4().hex[:12]}",
    )
    with pytest.raises(ObjectNotFound):
        store.get_bytes("raw/none.ndjson.gz")
    with pytest.raises(ObjectNotFound):
        store.metadata("raw/none.ndjson.gz")
    store.delete("raw/none.ndjson.gz")  # deleting a missing object is not an error


def test_a_catch_up_runs_groups_built_in_worker_processes_hold_what_one_process_builds(
    kafka_broker, new_topic, tmp_path, monkeypatch
):
    """A catch-up run builds its groups of minutes (assets.read_groups) two at a time in read worker
    processes (minute_object.write_minute_group_in_worker): every minute's raw and dead-letter objects, its
    rows in the raw table and its metadata equal those of the run that builds them one by one in its own
    process, and the counts equal what was produced."""
    topic = new_topic(3)
    keys = [closed_minute(m) for m in range(52, 41, -1)]  # eleven minutes, oldest first
    messages, valid, invalid = [], 0, 0
    for m, key in enumerate(keys):
        start_ms, _ = minute_window_ms(key)
        for i in range((m * 7) % 11):  # 0 to 10 records a minute; some minutes empty
            at, partition = start_ms + i * 5_000, (m + i) % 3
            if (m + i) % 5 == 0:
                messages.append((partition, at, b"not json" if i % 2 else b"{}"))
                invalid += 1
            else:
                messages.append((partition, at, encode_record(quote(m * 100 + i, at, symbol=f"S{i}"))))
                valid += 1
    produce(kafka_broker.bootstrap_servers, topic, messages)
    monkeypatch.setattr(assets, "GROUP_READ_RECORDS", 12)  # groups of a few minutes each
    in_workers: list[int] = []
    real = assets.write_minute_group_in_worker

    def counted(targets, **kwargs):
        in_workers.append(len(targets))
        return real(targets, **kwargs)

    monkeypatch.setattr(assets, "write_minute_group_in_worker", counted)
    bootstrap = kafka_broker.bootstrap_servers
    results = {}
    for name, workers in (("one", 1), ("two", 2)):
        resources = make_resources(bootstrap, topic, tmp_path / name)
        resources["kafka"] = KafkaResource(
            bootstrap_servers=bootstrap, topic=topic, ingest_group=f"g-{name}-{topic}", read_workers=workers,
            **PAST_MINUTES,
        )  # fmt: skip
        results[name] = dg.materialize(
            ASSETS,
            resources=resources,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
        )

    assert len(in_workers) >= 3 and sum(in_workers) < len(keys), in_workers  # several groups, none alone
    object_meta = {name: first_metadata(r, "raw_quote_object") for name, r in results.items()}
    for field in (
        "rows",
        "dead_lettered_rows",
        "offset_ranges",
        "minutes",
        "min_event_time",
        "max_event_time",
    ):
        assert object_meta["one"][field] == object_meta["two"][field], field
    assert (object_meta["two"]["rows"], object_meta["two"]["dead_lettered_rows"]) == (valid, invalid)
    for key in keys:
        for object_key in (raw_object_key(topic, key), dead_letter_object_key(topic, key)):
            found = [tmp_path / name / "lake" / object_key for name in ("one", "two")]
            assert [p.exists() for p in found] in ([True, True], [False, False]), object_key
            if found[0].exists():
                assert sorted(map(json.dumps, gzip_lines(found[0]))) == sorted(
                    map(json.dumps, gzip_lines(found[1]))
                ), object_key
        assert table_rows(tmp_path / "one" / "warehouse.duckdb", key) == table_rows(
            tmp_path / "two" / "warehouse.duckdb", key
        ), key
    assert sum(len(table_rows(tmp_path / "two" / "warehouse.duckdb", k)) for k in keys) == valid
    assert not any((tmp_path / "two" / "lake" / ".staging").iterdir())


def test_a_read_worker_that_stalls_fails_as_kafka_does_and_leaves_no_files(kafka_broker, new_topic, tmp_path):
    """A group read in a worker process whose range cannot be completed (offsets past the log's end)
    raises ReadStalled, as the in-process read does, and leaves none of the group's files behind."""
    topic = new_topic(1)
    key = closed_minute(40)
    produce(kafka_broker.bootstrap_servers, topic, valid_messages(key, 3, partitions=1))
    kafka = KafkaResource(bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic, **PAST_MINUTES)
    targets = [
        MinuteTarget(minute_iso(key), raw_object_key(topic, key), ((0, 0, 5),), *staging_paths(tmp_path))
    ]
    with pytest.raises(ReadStalled, match=r"stalled for 1 s with partitions \[0\] unfinished"):
        write_minute_group_in_worker(
            targets, ranges=[(0, 0, 5)], consumer_config=kafka.consumer_config(), batch_size=100,
            stall_timeout=1.0, topic=topic,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
