"""Pure ingestion logic: keys, offset arithmetic, the minute writer, the local lake, env wiring."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.ingestion.assets import parse_ranges
from stock_platform.ingestion.definitions import defs, ingestion_resources
from stock_platform.ingestion.minute_object import write_minute_files
from stock_platform.object_keys import (
    batch_manifest_key,
    dead_letter_object_key,
    minute_iso,
    raw_object_key,
    stage_path,
)
from stock_platform.quotes import encode_record
from stock_platform.resources.kafka import (
    KafkaResource,
    MinuteBatch,
    OffsetRange,
    advancing_commits,
    closed_reason,
    lag_of,
    offset_ranges,
)
from stock_platform.resources.kafka_reader import split_ranges
from stock_platform.resources.object_store import LocalObjectStore, ObjectNotFound, S3ObjectStore
from stock_platform.resources.warehouse import DuckDBWarehouse, MinuteFile
from stock_platform.settings import SettingsError, load_settings
from stock_platform_tests.ingestion.ingest_helpers import quote

KEY = "2026-11-28-08:05"


def test_object_keys_are_deterministic_per_topic_and_minute():
    assert (
        raw_object_key("stock-quotes", KEY)
        == "raw/stock-quotes/date=2026-11-28/hour=08/2026-11-28T0805Z.ndjson.gz"
    )
    assert dead_letter_object_key("stock-quotes", KEY) == (
        "dead_letter/stock-quotes/date=2026-11-28/hour=08/2026-11-28T0805Z.ndjson.gz"
    )
    assert (
        batch_manifest_key("stock-quotes", KEY)
        == "batches/stock-quotes/date=2026-11-28/hour=08/2026-11-28T0805Z.json"
    )
    assert stage_path("stock-quotes", KEY) == "stock-quotes/2026/11/28/0805"
    assert minute_iso(KEY) == "2026-11-28T08:05:00Z"


def test_lag_is_high_minus_committed_or_everything_kept_when_nothing_is_committed():
    assert lag_of(low=0, high=10, committed=None) == 10
    assert lag_of(low=4, high=10, committed=None) == 6
    assert lag_of(low=0, high=10, committed=7) == 3
    assert lag_of(low=0, high=10, committed=10) == 0
    assert lag_of(low=8, high=10, committed=3) == 2  # retention deleted 3..7: gone, not lag


def test_a_minute_closes_after_its_end_by_records_or_grace():
    assert closed_reason(now_ms=999, end_ms=1000, grace_ms=10, all_partitions_past_end=True) is None
    assert closed_reason(now_ms=1000, end_ms=1000, grace_ms=10, all_partitions_past_end=True) == "records"
    assert closed_reason(now_ms=1009, end_ms=1000, grace_ms=10, all_partitions_past_end=False) is None
    assert closed_reason(now_ms=1010, end_ms=1000, grace_ms=10, all_partitions_past_end=False) == "grace"


def test_offset_ranges_use_the_high_watermark_where_no_record_is_past_the_timestamp():
    ranges = offset_ranges(
        [0, 1, 2],
        highs={0: 50, 1: 9, 2: 30},
        starts={0: 10, 1: -1, 2: 31},  # partition 2's start record arrived after the watermark read
        ends={0: 20, 1: -1, 2: -1},
    )
    assert ranges == (OffsetRange(0, 10, 20), OffsetRange(1, 9, 9), OffsetRange(2, 30, 30))


def test_commits_only_move_forward():
    assert advancing_commits({0: None, 1: 5, 2: 9}, {0: 3, 1: 8, 2: 4}) == {0: 3, 1: 8}
    assert advancing_commits({0: 7}, {0: 7}) == {}


def test_batch_manifest_round_trips():
    batch = MinuteBatch("t", KEY, (OffsetRange(0, 5, 9), OffsetRange(1, 0, 3)), "records")
    assert MinuteBatch.from_json(batch.to_json()) == batch
    assert batch.ranges_text() == "0:5-9,1:0-3"
    assert parse_ranges(batch.ranges_text()) == {0: (5, 9), 1: (0, 3)}
    assert (batch.record_count, batch.ends) == (7, {0: 9, 1: 3})


@dataclass
class FakeMessage:
    p: int
    o: int
    ts: int
    v: bytes | None
    k: bytes | None = b"AAPL"

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def timestamp(self) -> tuple[int, int]:
        return (1, self.ts)

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def test_minute_writer_embeds_valid_records_and_dead_letters_the_rest(tmp_path: Path):
    good = quote(1, 1795853100000)
    pretty = json.dumps(quote(2, 1795853100500), indent=2).encode()
    chunks = [
        [FakeMessage(0, 7, 1795853100000, encode_record(good)), FakeMessage(0, 8, 1795853100100, None)],
        [FakeMessage(1, 3, 1795853100500, pretty), FakeMessage(1, 4, 1795853100900, b"\xff")],
    ]

    stats = write_minute_files(
        chunks,
        minute_iso=minute_iso(KEY),
        topic="stock-quotes",
        object_key="raw/k.ndjson.gz",
        raw_path=tmp_path / "raw.gz",
        dead_letter_path=tmp_path / "dead.gz",
    )

    lines = gzip.decompress((tmp_path / "raw.gz").read_bytes()).decode().splitlines()
    assert lines[0] == (
        '{"minute":"2026-11-28T08:05:00Z","topic":"stock-quotes","kafka_partition":0,"kafka_offset":7,'
        f'"kafka_timestamp_ms":1795853100000,"object_key":"raw/k.ndjson.gz","quote":{encode_record(good).decode()}}}'
    )
    assert json.loads(lines[1])["quote"] == quote(2, 1795853100500)  # re-encoded onto one line
    assert len(lines) == 2
    dead = [json.loads(line) for line in gzip.decompress((tmp_path / "dead.gz").read_bytes()).splitlines()]
    assert [(d["kafka_partition"], d["kafka_offset"], d["reason"], d["payload"]) for d in dead] == [
        (0, 8, "empty message (tombstone)", None),
        (1, 4, "not UTF-8: invalid start byte at byte 0", "\ufffd"),
    ]
    assert (stats.rows, stats.dead_lettered, stats.records) == (2, 2, 4)
    assert (stats.min_timestamp_ms, stats.max_timestamp_ms) == (1795853100000, 1795853100900)
    assert {p: (s.first_offset, s.last_offset, s.records) for p, s in stats.partitions.items()} == {
        0: (7, 8, 2),
        1: (3, 4, 2),
    }
    assert stats.raw_bytes == sum(len(line) + 1 for line in lines)


def test_minute_writer_writes_no_dead_letter_file_when_all_records_are_valid(tmp_path: Path):
    chunks = [[FakeMessage(0, 0, 1795853100000, encode_record(quote(1, 1795853100000)))]]
    stats = write_minute_files(
        chunks, minute_iso=minute_iso(KEY), topic="t", object_key="k",
        raw_path=tmp_path / "raw.gz", dead_letter_path=tmp_path / "dead.gz",
    )  # fmt: skip
    assert (stats.rows, stats.dead_lettered) == (1, 0)
    assert not (tmp_path / "dead.gz").exists()


def test_local_lake_publishes_whole_files_with_metadata(tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "lake"))
    staged = store.staging_dir() / "build.gz"
    staged.write_bytes(b"minute")

    assert store.put_file("raw/a/b.ndjson.gz", staged, {"rows": "1"}) == 6
    assert not staged.exists()
    assert store.get_bytes("raw/a/b.ndjson.gz") == b"minute"
    assert store.metadata("raw/a/b.ndjson.gz") == {"rows": "1"}
    assert sorted(p.name for p in (tmp_path / "lake" / "raw" / "a").iterdir()) == [
        "b.ndjson.gz",
        "b.ndjson.gz.meta.json",
    ]
    store.delete("raw/a/b.ndjson.gz")
    store.delete("raw/a/b.ndjson.gz")  # deleting a missing object is not an error
    assert not store.exists("raw/a/b.ndjson.gz")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("raw/a/b.ndjson.gz")
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("../outside", b"x")


def test_duckdb_load_replaces_a_minute_in_one_transaction(tmp_path: Path):
    def minute_file(name: str, offsets: range) -> Path:
        lines = [
            json.dumps({"minute": minute_iso(KEY), "kafka_partition": 0, "kafka_offset": o}) for o in offsets
        ]
        path = tmp_path / name
        path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
        return path

    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    assert warehouse.load_minutes("t", [MinuteFile(KEY, "k", minute_file("a.gz", range(5)))]) == {KEY: 5}
    assert warehouse.load_minutes("t", [MinuteFile(KEY, "k", minute_file("b.gz", range(3)))]) == {KEY: 3}
    with pytest.raises(duckdb.Error):
        bad = tmp_path / "bad.gz"
        bad.write_bytes(gzip.compress(b"{not json\n"))
        warehouse.load_minutes("t", [MinuteFile(KEY, "k", bad)])
    assert warehouse.minute_row_count(KEY) == 3  # the failed re-load left the minute as it was


def test_resources_default_to_the_embedded_lake_and_duckdb(tmp_path: Path):
    resources = ingestion_resources(load_settings({"STOCK_PLATFORM_HOME": str(tmp_path)}))
    assert resources["kafka"].bootstrap_servers == "127.0.0.1:9092"
    assert (resources["kafka"].topic, resources["kafka"].ingest_group) == (
        "stock-quotes",
        "stock-platform-ingest",
    )
    assert resources["object_store"] == LocalObjectStore(root=str(tmp_path / "lake"))
    assert resources["warehouse"] == DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))


SNOWFLAKE_LOADER = {"WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "org-acct", "SNOWFLAKE_USER": "loader"}


@pytest.mark.slow  # wires the real SnowflakeResource: importing dagster_snowflake alone takes ~6 s
def test_resources_for_s3_and_snowflake_take_secrets_only_as_env_vars():
    env = {**SNOWFLAKE_LOADER, "OBJECT_STORE": "s3", "S3_SECURE": "true", "KAFKA_TOPIC": "q",
           "S3_SECRET_KEY": "s3-secret", "SNOWFLAKE_PASSWORD": "sf-secret"}  # fmt: skip
    resources = ingestion_resources(load_settings(env))
    store = resources["object_store"]
    assert isinstance(store, S3ObjectStore)
    assert store.secure is True
    assert (store.access_key, store.secret_key) == ("stock-platform-pipeline", dg.EnvVar("S3_SECRET_KEY"))
    assert resources["kafka"].topic == "q"
    from stock_platform.resources.snowflake_warehouse import SnowflakeWarehouse

    warehouse = resources["warehouse"]
    assert isinstance(warehouse, SnowflakeWarehouse)
    assert warehouse.snowflake.password == dg.EnvVar("SNOWFLAKE_PASSWORD")
    assert (warehouse.snowflake.schema_, warehouse.snowflake.role) == ("BRONZE", "STOCK_PLATFORM_LOADER")
    keyed = {**SNOWFLAKE_LOADER, "SNOWFLAKE_PRIVATE_KEY_PATH": "/k.p8", "SNOWFLAKE_PASSWORD": "ignored",
             "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "pp"}  # fmt: skip
    snowflake = ingestion_resources(load_settings(keyed))["warehouse"].snowflake
    assert (snowflake.private_key_path, snowflake.private_key_password, snowflake.password) == (
        "/k.p8",
        dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"),
        None,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OBJECT_STORE": "s3"}, "^S3_SECRET_KEY must be set when OBJECT_STORE=s3$"),
        (
            {"WAREHOUSE": "snowflake"},
            "^SNOWFLAKE_ACCOUNT and SNOWFLAKE_USER must be set when WAREHOUSE=snowflake$",
        ),
        (SNOWFLAKE_LOADER, "needs SNOWFLAKE_PRIVATE_KEY_PATH .* or SNOWFLAKE_PASSWORD"),
    ],
)
def test_resources_name_the_missing_variable(env: dict[str, str], message: str):
    with pytest.raises(SettingsError, match=message):
        ingestion_resources(load_settings(env))


def test_definitions_hold_the_ingestion_graph():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"stock_quotes_topic", "kafka_quote_batch", "raw_quote_object", "raw_quote_table"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("raw_quote_table")).parent_keys} == {
        "raw_quote_object"
    }
    assert defs.resolve_job_def("ingest_minute_job").partitions_def is not None
    assert isinstance(defs.resources["kafka"], KafkaResource)


def test_split_ranges_shares_records_evenly_and_reads_each_once():
    ranges = (OffsetRange(0, 0, 10), OffsetRange(1, 100, 103), OffsetRange(2, 5, 5))
    groups = split_ranges(ranges, 3)
    assert groups == [
        (OffsetRange(0, 0, 5),),
        (OffsetRange(0, 5, 10),),
        (OffsetRange(1, 100, 103),),
    ]
    assert split_ranges(ranges, 1) == [ranges]
    assert split_ranges((OffsetRange(0, 0, 0),), 4) == [(OffsetRange(0, 0, 0),)]
    covered = sorted(
        (r.partition, o) for g in split_ranges(ranges, 4) for r in g for o in range(r.start, r.end)
    )
    assert covered == sorted((r.partition, o) for r in ranges for o in range(r.start, r.end))
