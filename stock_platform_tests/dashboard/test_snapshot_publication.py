"""The gold build publishes the dashboard's snapshot, equal to gold, and a snapshot that cannot be
published never fails the build (the real dbt assets, in process, on DuckDB)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform.dashboard.gold_reader import GOLD_TABLES, candle_filters
from stock_platform.services.gold_seed import Feed, append_raw, dbt_env, materialize_gold
from stock_platform.settings import gold_snapshot_path
from stock_platform_tests.recent import YESTERDAY

pytestmark = pytest.mark.slow  # dbt builds in process (seconds each)


def rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return sorted(conn.execute(sql).fetchall())


def test_each_gold_build_publishes_a_snapshot_equal_to_the_gold_the_page_shows(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    # Two UTC days, so the snapshot must drop the earlier day's 1-minute candles.
    end = YESTERDAY + dt.timedelta(minutes=20)
    feed = Feed(["AAPL", "MSFT", "QQQQ"], end - dt.timedelta(minutes=50), every_s=20)
    append_raw(warehouse, feed.next_minutes(50))
    materialize_gold(warehouse, feed.last_minute_key, views=True)
    snapshot = gold_snapshot_path(warehouse)
    first = snapshot.stat().st_ino

    append_raw(warehouse, feed.next_minutes(1))
    materialize_gold(warehouse, feed.last_minute_key)
    assert snapshot.stat().st_ino != first  # replaced, not written in place

    for table in GOLD_TABLES:
        where = ""
        if table == "gold_candlestick":
            filters = candle_filters("gold.gold_candlestick")
            where = f" where ({filters['minute']}) or ({filters['day']})"
        expected = rows(warehouse, f"select * from gold.{table}{where}")
        assert expected, table
        assert rows(snapshot, f"select * from gold.{table}") == expected, table
    minute_days = rows(snapshot, "select distinct date_trunc('day', bucket_start) from gold.gold_candlestick "
                                 "where grain = 'minute'")  # fmt: skip
    assert minute_days == [(YESTERDAY.replace(tzinfo=None),)]
    assert rows(
        warehouse, f"select count(*) from gold.gold_candlestick where bucket_start < '{YESTERDAY.date()}'"
    ) != [(0,)]


def test_a_snapshot_that_cannot_be_published_leaves_the_build_successful(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    gold_snapshot_path(warehouse).mkdir()  # a folder where the file goes: the rename fails
    feed = Feed(["AAPL"], YESTERDAY + dt.timedelta(hours=10), every_s=30)
    append_raw(warehouse, feed.next_minutes(2))
    from stock_platform.transform.definitions import dbt_model_assets

    with dbt_env(warehouse), dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([dbt_model_assets[0]], partition_key=feed.last_minute_key, instance=instance)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    assert any("gold snapshot for the dashboard not updated" in message for message in messages)
    assert rows(warehouse, "select symbol from gold.gold_kpi") == [("AAPL",)]
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []
