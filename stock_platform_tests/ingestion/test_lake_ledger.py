"""The lake as the source of truth: raw-key parsing, the lake/ledger comparison, stale staging files,
listing the lake (local folder and S3), and the DuckDB raw table keyed by (topic, minute) with its ledger.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from pathlib import Path

import duckdb
import pytest

from stock_platform.ingestion import lake
from stock_platform.object_keys import (
    batch_manifest_key,
    dead_letter_object_key,
    raw_object_key,
)
from stock_platform.partitions import minute_window
from stock_platform.resources.object_store import LocalObjectStore, S3ObjectStore, remove_stale_entries
from stock_platform.resources.warehouse import DUCKDB_LEDGER, DUCKDB_TABLE, DuckDBWarehouse, MinuteFile
from stock_platform_tests.ingestion.lake_fixtures import envelopes, gzip_file, put_minute

KEY = "2026-11-28-08:00"


def test_raw_object_keys_parse_back_to_their_minutes():
    for key in ("2026-11-28-08:00", "2026-11-28-23:59", "2027-01-01-00:00"):
        assert lake.partition_key_of_object("t", raw_object_key("t", key)) == key
    for other in (
        raw_object_key("t2", KEY),  # another topic
        dead_letter_object_key("t", KEY),
        batch_manifest_key("t", KEY),
        raw_object_key("t", KEY) + ".meta.json",
        "raw/t/date=2026-11-28/hour=08/notes.txt",
    ):
        assert lake.partition_key_of_object("t", other) is None


def test_date_prefixes_cover_the_window_across_midnight():
    start = dt.datetime(2026, 11, 27, 23, 30, tzinfo=dt.UTC)
    assert lake.date_prefixes("t", start, start + dt.timedelta(hours=1)) == [
        "raw/t/date=2026-11-27/",
        "raw/t/date=2026-11-28/",
    ]
    # The end is exclusive: a window ending at midnight stays in its day.
    assert lake.date_prefixes("t", start, start + dt.timedelta(minutes=30)) == ["raw/t/date=2026-11-27/"]
    assert lake.date_prefixes("t", start, start) == []


def test_missing_minutes_are_the_lake_minutes_absent_from_the_ledger_in_time_order():
    lake_keys = ["2026-11-28-09:00", "2026-11-28-08:59", "2026-11-28-10:00", "2026-11-27-23:59"]
    loaded = ["2026-11-28-08:59", "2026-11-28-11:00"]  # a loaded minute without an object is not "missing"
    assert lake.missing_minutes(lake_keys, loaded) == [
        "2026-11-27-23:59",
        "2026-11-28-09:00",
        "2026-11-28-10:00",
    ]
    assert lake.missing_minutes([], loaded) == []


def test_recent_empty_minutes_are_pending_not_missing():
    missing = ["2026-11-28-07:00", "2026-11-28-07:55", "2026-11-28-07:56", "2026-11-28-07:57"]
    rows = {"2026-11-28-07:00": 0, "2026-11-28-07:55": 0, "2026-11-28-07:56": 4, "2026-11-28-07:57": None}
    settle_from = dt.datetime(2026, 11, 28, 7, 50, tzinfo=dt.UTC)
    still, pending = lake.settle_empty_minutes(missing, settle_from, rows.__getitem__)
    # An old empty minute is missing; a recent one may still be loading; a recent one with rows is lost.
    assert still == ["2026-11-28-07:00", "2026-11-28-07:56", "2026-11-28-07:57"]
    assert pending == ["2026-11-28-07:55"]


def test_coverage_metadata_names_the_missing_range_and_the_command():
    start = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
    end = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
    failed = lake.LakeCoverage("t", start, end, 5, ["2026-11-28-07:01", "2026-11-28-07:03"])
    assert not failed.passed
    assert failed.metadata() == {
        "missing_minutes": 2,
        "first_missing": "2026-11-28-07:01",
        "last_missing": "2026-11-28-07:03",
        "lake_minutes": 5,
        "checked_from": "2026-11-27T08:00Z",
        "checked_to": "2026-11-28T08:00Z",
        "pending_empty_minutes": 0,
        "rebuild_command": "stock-platform rebuild --from 2026-11-28-07:01 --to 2026-11-28-07:03",
    }
    assert "stock-platform rebuild --from 2026-11-28-07:01 --to 2026-11-28-07:03" in failed.summary()
    passed = lake.LakeCoverage("t", start, end, 5, [])
    assert passed.passed and passed.metadata()["rebuild_command"] == ""


def test_minute_keys_on_the_command_line_are_validated():
    assert lake.parse_minute_key("2026-11-28-08:00") == "2026-11-28-08:00"
    with pytest.raises(ValueError, match="not a minute key"):
        lake.parse_minute_key("2026-11-28T08:00")


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_stale_staging_entries_are_removed_and_live_ones_kept(tmp_path: Path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "killed.raw.ndjson.gz").write_bytes(b"x")
    _age(staging / "killed.raw.ndjson.gz", 7200)
    (staging / "writing.raw.ndjson.gz").write_bytes(b"x")  # being written now
    old_download = staging / "tmpold"
    old_download.mkdir()
    (old_download / "minute.ndjson.gz").write_bytes(b"x")
    _age(old_download / "minute.ndjson.gz", 7200)
    _age(old_download, 7200)
    held_download = staging / "tmpheld"  # an old folder whose file was just written: in use
    held_download.mkdir()
    (held_download / "minute.ndjson.gz").write_bytes(b"x")
    _age(held_download, 7200)

    assert remove_stale_entries(staging, 3600) == 2
    assert sorted(p.name for p in staging.iterdir()) == ["tmpheld", "writing.raw.ndjson.gz"]
    assert remove_stale_entries(staging, 3600) == 0
    assert remove_stale_entries(tmp_path / "absent", 3600) == 0


def test_the_local_lake_removes_what_killed_runs_left_in_its_staging_folder(tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "lake"), staging_max_age_seconds=60)
    left = store.staging_dir() / "0123.raw.ndjson.gz"
    left.write_bytes(b"half a minute")
    assert store.remove_stale_staging() == 0  # young: a run may be writing it
    assert store.remove_stale_staging(now=time.time() + 61) == 1
    assert not left.exists()
    assert store.staging_dir().is_dir()


def test_local_lake_lists_published_objects_only(tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "lake"))
    keys = [raw_object_key("t", k) for k in ("2026-11-28-08:01", "2026-11-28-08:00", "2026-11-29-00:00")]
    for key in keys:
        store.put_bytes(key, b"x", {"rows": "1"})
    store.put_bytes(raw_object_key("t2", KEY), b"x")
    store.put_bytes(dead_letter_object_key("t", KEY), b"x")
    (tmp_path / "lake" / "raw" / "t" / ".half.tmp").write_bytes(b"x")  # a publish in progress
    (store.staging_dir() / "build.gz").write_bytes(b"x")

    assert store.list_keys("raw/t/") == sorted(keys)
    assert store.list_keys("raw/t/date=2026-11-28/") == sorted(keys[:2])
    assert store.list_keys("raw/t/date=2026-11-28/hour=08/2026-11-28T0801") == [keys[0]]
    assert store.list_keys("raw/none/") == []
    assert len(store.list_keys("")) == 5  # the whole lake, without sidecars, temp or staging files
    with pytest.raises(ValueError, match="escapes"):
        store.list_keys("../elsewhere/")


@pytest.mark.integration
def test_s3_lists_objects_by_prefix(s3_server, tmp_path: Path):
    store = S3ObjectStore(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"lake-{uuid.uuid4().hex[:12]}",
    )
    keys = [raw_object_key("t", f"2026-11-28-08:{m:02d}") for m in range(3)]
    for key in keys:
        store.put_bytes(key, b"x", {"rows": "1"})
    store.put_bytes(raw_object_key("t", "2026-11-29-00:00"), b"x")
    store.put_bytes(dead_letter_object_key("t", KEY), b"x")

    assert store.list_keys("raw/t/date=2026-11-28/") == keys
    assert len(store.list_keys("raw/t/")) == 4
    assert store.list_keys("raw/other/") == []
    start = minute_window("2026-11-28-08:01")[0]
    assert lake.lake_minutes(store, "t", start, start + dt.timedelta(days=2)) == {
        "2026-11-28-08:01": keys[1],
        "2026-11-28-08:02": keys[2],
        "2026-11-29-00:00": raw_object_key("t", "2026-11-29-00:00"),
    }


def _table(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_duckdb_load_of_one_topic_never_touches_another_topics_minute(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(path=str(db))

    def load(topic: str, count: int) -> dict[str, int]:
        path = gzip_file(tmp_path, envelopes(topic, KEY, count))
        return warehouse.load_minutes(topic, [MinuteFile(KEY, raw_object_key(topic, KEY), path)])

    def by_topic() -> list[tuple]:
        return _table(db, f"select topic, count(*) from {DUCKDB_TABLE} group by 1 order by 1")

    assert load("a", 5) == {KEY: 5}
    assert load("b", 3) == {KEY: 3}
    assert by_topic() == [("a", 5), ("b", 3)]
    assert load("a", 2) == {KEY: 2}  # a's re-load replaces a's minute only
    assert by_topic() == [("a", 2), ("b", 3)]
    before = _table(db, f"select * exclude (loaded_at) from {DUCKDB_TABLE} order by all")
    assert load("a", 2) == {KEY: 2}  # idempotent
    assert _table(db, f"select * exclude (loaded_at) from {DUCKDB_TABLE} order by all") == before
    assert (warehouse.minute_row_count(KEY, "a"), warehouse.minute_row_count(KEY)) == (2, 5)

    assert warehouse.loaded_minutes("a") == {KEY: 2}
    assert warehouse.loaded_minutes("b") == {KEY: 3}
    assert _table(db, f"select topic, row_count from {DUCKDB_LEDGER} order by 1") == [("a", 2), ("b", 3)]
    # The table's layout: the lineage columns, then topic last.
    assert [c[0] for c in _table(db, f"describe {DUCKDB_TABLE}")] == [
        "v",
        "minute",
        "object_key",
        "kafka_partition",
        "kafka_offset",
        "loaded_at",
        "topic",
    ]


def test_duckdb_identity_columns_are_the_envelopes_own_fields(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    rows = envelopes("a", KEY, 9, offset_start=1001)  # partition i % 2, offset 1001 + i
    rows[4]["kafka_offset"] = 2**40  # past 32 bits
    path = gzip_file(tmp_path, rows)
    DuckDBWarehouse(path=str(db)).load_minutes("a", [MinuteFile(KEY, raw_object_key("a", KEY), path)])
    loaded = _table(db, f"select kafka_partition, kafka_offset, v->>'quote' from {DUCKDB_TABLE} order by 2")
    expected = sorted(
        ((r["kafka_partition"], r["kafka_offset"], r["quote"]) for r in rows), key=lambda e: e[1]
    )
    assert [(p, o, json.loads(q)) for p, o, q in loaded] == expected


def test_duckdb_stores_the_envelopes_with_zstd_and_returns_their_text_unchanged(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    # Enough rows for DuckDB to write compressed segments (a few rows may be stored uncompressed).
    rows = envelopes("a", KEY, 20_000)
    lines = [json.dumps(row) for row in rows]  # as gzip_file writes them
    path = gzip_file(tmp_path, rows)
    DuckDBWarehouse(path=str(db)).load_minutes("a", [MinuteFile(KEY, raw_object_key("a", KEY), path)])
    compressions = {
        c
        for (c,) in _table(
            db,
            f"""select distinct compression from pragma_storage_info('{DUCKDB_TABLE}')
                where column_name = 'v' and segment_type <> 'VALIDITY'""",
        )
    }
    assert compressions == {"ZSTD"}
    # The envelope text byte for byte, as the raw object holds it.
    assert sorted(v for (v,) in _table(db, f"select v from {DUCKDB_TABLE}")) == sorted(lines)


def test_the_ledger_counts_an_empty_minute_as_loaded_and_answers_windows(tmp_path: Path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    empty, full = "2026-11-28-08:00", "2026-11-28-08:01"
    warehouse.load_minutes(
        "t",
        [
            MinuteFile(empty, "k0", gzip_file(tmp_path, [])),
            MinuteFile(full, "k1", gzip_file(tmp_path, envelopes("t", full, 4))),
        ],
    )
    assert warehouse.loaded_minutes("t") == {empty: 0, full: 4}
    start, end = minute_window(full)
    assert warehouse.loaded_minutes("t", start, end) == {full: 4}
    assert warehouse.loaded_minutes("t", None, start) == {empty: 0}
    assert warehouse.loaded_minutes("other") == {}


def test_duckdb_migrates_a_raw_table_from_before_topics_and_the_ledger(tmp_path: Path):
    db = tmp_path / "w.duckdb"
    old = gzip_file(tmp_path, envelopes("a", KEY, 3))
    minute = minute_window(KEY)[0].replace(tzinfo=None)
    with duckdb.connect(str(db)) as conn:  # the layout before this change, with a loaded minute
        conn.execute(
            f"""create table {DUCKDB_TABLE} (v json, minute timestamp, object_key varchar,
                kafka_partition integer, kafka_offset bigint, loaded_at timestamp)"""
        )
        conn.execute(
            f"""insert into {DUCKDB_TABLE} select json, ?::timestamp, 'k', (json->>'kafka_partition')::integer,
                (json->>'kafka_offset')::bigint, now()::timestamp
                from read_json_objects(?, format = 'newline_delimited', compression = 'gzip')""",
            [minute, str(old)],
        )
    warehouse = DuckDBWarehouse(path=str(db))
    # The old minute counts as loaded; its rows got their topic from the envelope.
    assert warehouse.loaded_minutes("a") == {KEY: 3}
    assert _table(db, f"select distinct topic from {DUCKDB_TABLE}") == [("a",)]
    assert [c[0] for c in _table(db, f"describe {DUCKDB_TABLE}")][-1] == "topic"
    # Loading another topic's minute now leaves the migrated rows alone.
    other = gzip_file(tmp_path, envelopes("b", KEY, 1))
    warehouse.load_minutes("b", [MinuteFile(KEY, "kb", other)])
    assert _table(db, f"select topic, count(*) from {DUCKDB_TABLE} group by 1 order by 1") == [
        ("a", 3),
        ("b", 1),
    ]


def test_coverage_compares_a_local_lake_with_the_duckdb_ledger(tmp_path: Path):
    store = LocalObjectStore(root=str(tmp_path / "lake"))
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    minutes = [f"2026-11-28-07:{m:02d}" for m in range(50, 60)]
    for i, key in enumerate(minutes):
        put_minute(store, "t", key, 0 if i == 8 else 2)
    loaded = minutes[:3] + minutes[6:7]
    warehouse.load_minutes(
        "t",
        [MinuteFile(k, raw_object_key("t", k), tmp_path / "lake" / raw_object_key("t", k)) for k in loaded],
    )
    result = lake.check_before(store, warehouse, "t", KEY)  # a run of 08:00
    # 07:58 is empty and recent (within EMPTY_MINUTE_SETTLE): pending, not missing.
    assert result.missing == [minutes[3], minutes[4], minutes[5], minutes[7], minutes[9]]
    assert result.pending_empty == [minutes[8]]
    assert (result.lake_count, result.metadata()["first_missing"]) == (10, "2026-11-28-07:53")
    whole = lake.coverage(store, warehouse, "t")
    assert whole.missing == [minutes[3], minutes[4], minutes[5], minutes[7], minutes[8], minutes[9]]
