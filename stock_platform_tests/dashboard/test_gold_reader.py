"""The dashboard's data access, on DuckDB (through the gold snapshot) and on fakesnow's Snowflake: exact
frames from a seeded gold, against the rows chosen by an independent computation in Python.

The gold tables are seeded directly with random rows (several days, symbols, grains, gaps), so every
filter the reader applies (the current day's 1-minute candles, the last weeks' daily candles, one symbol)
is exercised on rows that the filter must drop.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_platform.dashboard.gold_reader import (
    CANDLE_COLUMNS,
    DAILY_CANDLE_DAYS,
    KPI_COLUMNS,
    TREEMAP_COLUMNS,
    GoldEmpty,
    GoldReader,
    GoldUnavailable,
    SnapshotReader,
    SnowflakeReader,
    snowflake_connection_args,
)
from stock_platform.dashboard.snapshot import publish, try_publish
from stock_platform.settings import SettingsError, gold_snapshot_path, load_settings

EPOCH = dt.datetime(2026, 11, 2)


@dataclass
class Gold:
    kpi: list[tuple[Any, ...]]
    candles: list[
        tuple[Any, ...]
    ]  # symbol, grain, bucket_start, open, high, low, close, sample_count, first, last
    treemap: list[tuple[Any, ...]]

    @property
    def symbols(self) -> list[str]:
        return sorted({row[0] for row in self.kpi})


def random_gold(rng: random.Random, symbols: int, days: int, minutes_per_day: int) -> Gold:
    """Random but consistent-looking gold rows; the reader only filters and orders them."""
    names = [f"S{index:02d}" for index in range(symbols)]
    kpi, candles, treemap = [], [], []
    last_day = EPOCH + dt.timedelta(days=days - 1)
    for name in names:
        # A symbol may stop early (stale), so its newest day is before the global newest day.
        own_days = days if rng.random() < 0.8 else rng.randint(1, days)
        for day_index in range(own_days):
            day = EPOCH + dt.timedelta(days=day_index)
            starts = sorted(rng.sample(range(24 * 60), min(minutes_per_day, 24 * 60)))
            day_samples = 0
            for start in starts:
                bucket = day + dt.timedelta(minutes=start)
                price = round(rng.uniform(10, 900), 2)
                samples = rng.randint(1, 6)
                day_samples += samples
                candles.append((name, "minute", bucket, price, price + 1, price - 1, price + 0.5, samples,
                                bucket, bucket + dt.timedelta(seconds=50)))  # fmt: skip
            candles.append(
                (name, "day", day, 1.0, 2.0, 0.5, 1.5, day_samples, day, day + dt.timedelta(hours=23))
            )
        as_of = min(last_day, EPOCH + dt.timedelta(days=own_days - 1)) + dt.timedelta(
            hours=rng.randint(0, 23)
        )
        price = round(rng.uniform(10, 900), 2)
        kpi.append((name, price, round(price * 0.01, 2), 1.0, price + 3, price - 3, as_of,
                    as_of + dt.timedelta(milliseconds=rng.randint(0, 900))))  # fmt: skip
        volatility = None if rng.random() < 0.2 else rng.uniform(0.0001, 0.01)
        treemap.append((name, price, price, volatility, None if volatility is None else volatility / 0.005,
                        rng.randint(1, 60), rng.randint(0, 59), last_day, last_day + dt.timedelta(minutes=59)))  # fmt: skip
    return Gold(kpi, candles, treemap)


def expected_candles(gold: Gold, symbol: str, grain: str) -> pd.DataFrame:
    """The reader's contract, computed in Python: the current day is the UTC day of the newest 1-minute
    candle of any symbol; daily candles reach back DAILY_CANDLE_DAYS days from the newest daily candle."""
    minute_rows = [row for row in gold.candles if row[1] == "minute"]
    day_rows = [row for row in gold.candles if row[1] == "day"]
    if grain == "minute":
        newest = max(row[2] for row in minute_rows)
        start = newest.replace(hour=0, minute=0, second=0, microsecond=0)
        rows = [row for row in minute_rows if row[0] == symbol and row[2] >= start]
    else:
        start = max(row[2] for row in day_rows) - dt.timedelta(days=DAILY_CANDLE_DAYS - 1)
        rows = [row for row in day_rows if row[0] == symbol and row[2] >= start]
    rows.sort(key=lambda row: row[2])
    return pd.DataFrame([(row[2], *row[3:8]) for row in rows], columns=list(CANDLE_COLUMNS))


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected), (len(actual), len(expected))
    for column in expected.columns:
        for got, want in zip(actual[column].tolist(), expected[column].tolist(), strict=True):
            if want is None or (isinstance(want, float) and math.isnan(want)):
                assert got is None or (isinstance(got, float) and math.isnan(got)), (column, got)
            elif isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-12), (column, got, want)
            elif isinstance(want, dt.datetime):
                assert pd.Timestamp(got) == pd.Timestamp(want), (column, got, want)
            else:
                assert got == want, (column, got, want)


def check_reader(reader: GoldReader, gold: Gold) -> None:
    kpi = sorted(gold.kpi)
    assert_frames_equal(reader.kpis(), pd.DataFrame(kpi, columns=list(KPI_COLUMNS)))
    assert_frames_equal(reader.treemap(), pd.DataFrame(sorted(gold.treemap), columns=list(TREEMAP_COLUMNS)))
    for symbol in gold.symbols:
        for grain in ("minute", "day"):
            assert_frames_equal(reader.candles(symbol, grain), expected_candles(gold, symbol, grain))
    assert reader.candles("NOPE", "minute").empty


# ------------------------------------------------------------------------------------------------ DuckDB

KPI_DDL = (
    "create table {t} (symbol varchar, price double, change double, change_pct double, day_high double, "
    "day_low double, as_of timestamp, fetched_at timestamp)"
)
CANDLE_DDL = (
    "create table {t} (symbol varchar, grain varchar, bucket_start timestamp, open double, high double, "
    "low double, close double, sample_count bigint, first_quote_ts timestamp, last_quote_ts timestamp)"
)
TREEMAP_DDL = (
    "create table {t} (symbol varchar, avg_price double, last_price double, volatility double, "
    "relative_volatility double, candle_count bigint, return_count bigint, window_start timestamp, "
    "window_end timestamp)"
)


def insert(conn: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        conn.executemany(f"insert into {table} values ({', '.join(['?'] * len(rows[0]))})", rows)


def write_duckdb_gold(path: Path, gold: Gold, treemap_as_view: bool = True) -> None:
    """Gold as dbt-duckdb leaves it: tables in schema gold, gold_treechart a view over another schema."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema if not exists gold")
        conn.execute("create schema if not exists silver")
        conn.execute("drop view if exists gold.gold_treechart")
        for table in ("gold.gold_kpi", "gold.gold_candlestick", "gold.gold_treechart", "silver.treemap_rows"):
            conn.execute(f"drop table if exists {table}")
        conn.execute(KPI_DDL.format(t="gold.gold_kpi"))
        conn.execute(CANDLE_DDL.format(t="gold.gold_candlestick"))
        insert(conn, "gold.gold_kpi", gold.kpi)
        insert(conn, "gold.gold_candlestick", gold.candles)
        if treemap_as_view:
            conn.execute(TREEMAP_DDL.format(t="silver.treemap_rows"))
            insert(conn, "silver.treemap_rows", gold.treemap)
            # Qualified by the catalog, as dbt-duckdb writes a view's references.
            catalog = path.name.split(".")[0]
            conn.execute(f'create view gold.gold_treechart as select * from "{catalog}".silver.treemap_rows')
        else:
            conn.execute(TREEMAP_DDL.format(t="gold.gold_treechart"))
            insert(conn, "gold.gold_treechart", gold.treemap)


@pytest.fixture(scope="module")
def seeded_duckdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Gold]:
    path = tmp_path_factory.mktemp("gold") / "warehouse.duckdb"
    gold = random_gold(random.Random(11), symbols=7, days=DAILY_CANDLE_DAYS + 6, minutes_per_day=40)
    write_duckdb_gold(path, gold)
    return path, gold


def test_the_snapshot_reader_returns_exactly_the_gold_rows_the_page_shows(seeded_duckdb):
    warehouse, gold = seeded_duckdb
    snapshot = gold_snapshot_path(warehouse)
    published = publish(warehouse, snapshot)
    check_reader(SnapshotReader(snapshot), gold)
    # The snapshot holds only those rows: the current day's minutes and the last weeks' days.
    expected_rows = sum(len(expected_candles(gold, s, g)) for s in gold.symbols for g in ("minute", "day"))
    assert published.rows == {"gold_kpi": len(gold.kpi), "gold_treechart": len(gold.treemap),
                              "gold_candlestick": expected_rows}  # fmt: skip
    assert expected_rows < len(gold.candles)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    symbols=st.integers(1, 5),
    days=st.integers(1, 40),
    minutes=st.integers(1, 30),
)
def test_any_gold_reads_back_exactly_through_the_snapshot(tmp_path_factory, seed, symbols, days, minutes):
    warehouse = tmp_path_factory.mktemp("any") / "w.duckdb"
    gold = random_gold(random.Random(seed), symbols, days, minutes)
    write_duckdb_gold(warehouse, gold, treemap_as_view=seed % 2 == 0)
    snapshot = gold_snapshot_path(warehouse)
    publish(warehouse, snapshot)
    check_reader(SnapshotReader(snapshot), gold)


def test_status_changes_with_each_publication_and_an_open_reader_keeps_its_file(seeded_duckdb):
    warehouse, gold = seeded_duckdb
    snapshot = warehouse.with_name("status.gold-snapshot.duckdb")
    publish(warehouse, snapshot)
    reader = SnapshotReader(snapshot)
    first = reader.status()
    held = duckdb.connect(str(snapshot), read_only=True)  # a page in the middle of its reads
    try:
        publish(warehouse, snapshot)
        assert held.execute("select count(*) from gold.gold_kpi").fetchone() == (len(gold.kpi),)
    finally:
        held.close()
    second = reader.status()
    assert second.version != first.version and second.published_at is not None
    assert reader.kpis()["symbol"].tolist() == gold.symbols


def test_no_snapshot_and_a_broken_one_are_explained(tmp_path):
    missing = SnapshotReader(tmp_path / "none.gold-snapshot.duckdb")
    with pytest.raises(GoldEmpty, match="no gold snapshot"):
        missing.status()
    with pytest.raises(GoldEmpty, match="no gold snapshot"):
        missing.kpis()
    broken = tmp_path / "broken.gold-snapshot.duckdb"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(GoldUnavailable, match="cannot open the gold snapshot") as raised:
        SnapshotReader(broken).kpis()
    assert not isinstance(raised.value, GoldEmpty)


def test_a_warehouse_without_gold_yet_gives_an_empty_snapshot_that_says_so(tmp_path):
    warehouse = tmp_path / "fresh.duckdb"
    duckdb.connect(str(warehouse)).close()
    snapshot = gold_snapshot_path(warehouse)
    assert publish(warehouse, snapshot).rows == {}
    with pytest.raises(GoldEmpty, match="not in .* yet"):
        SnapshotReader(snapshot).kpis()


def test_empty_gold_kpi_is_no_data_yet(tmp_path):
    warehouse = tmp_path / "empty.duckdb"
    write_duckdb_gold(warehouse, Gold([], [], []), treemap_as_view=False)
    snapshot = gold_snapshot_path(warehouse)
    publish(warehouse, snapshot)
    with pytest.raises(GoldEmpty, match="no rows yet"):
        SnapshotReader(snapshot).kpis()
    assert SnapshotReader(snapshot).treemap().empty


def test_publication_fails_softly_while_another_process_holds_the_warehouse(seeded_duckdb, tmp_path):
    warehouse, gold = seeded_duckdb
    snapshot = tmp_path / "held.gold-snapshot.duckdb"
    publish(warehouse, snapshot)
    before = snapshot.stat().st_ino
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys, time; c = duckdb.connect({str(warehouse)!r}); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    warnings: list[str] = []
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert try_publish(warehouse, snapshot, lambda _: None, warnings.append) is None
    finally:
        holder.communicate("", timeout=30)
    assert len(warnings) == 1 and "keeps the previous one" in warnings[0]
    # The previous snapshot is untouched and readable; no staging file is left behind.
    assert snapshot.stat().st_ino == before
    assert SnapshotReader(snapshot).kpis()["symbol"].tolist() == gold.symbols
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held.gold-snapshot.duckdb"]


# --------------------------------------------------------------------------------------------- Snowflake


@pytest.fixture(scope="module")
def seeded_fakesnow(fakesnow_server: Any) -> Iterator[tuple[SnowflakeReader, Gold, dict[str, Any]]]:
    import snowflake.connector

    gold = random_gold(random.Random(5), symbols=4, days=DAILY_CANDLE_DAYS + 3, minutes_per_day=6)
    database = f"DASH_{random.Random().randrange(16**8):08X}"
    with snowflake.connector.connect(**fakesnow_server.connection_kwargs()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"CREATE DATABASE {database}")
        cursor.execute(f"CREATE SCHEMA {database}.GOLD")
        for ddl, table, rows in (
            (KPI_DDL, "GOLD_KPI", gold.kpi),
            (CANDLE_DDL, "GOLD_CANDLESTICK", gold.candles),
            (TREEMAP_DDL, "GOLD_TREECHART", gold.treemap),
        ):
            qualified = f"{database}.GOLD.{table}"
            cursor.execute(ddl.format(t=qualified).replace(" timestamp", " timestamp_ntz"))
            marks = ", ".join(["%s"] * len(rows[0]))
            cursor.executemany(f"INSERT INTO {qualified} VALUES ({marks})", rows)
    args = fakesnow_server.connection_kwargs(database=database, schema="GOLD")
    yield SnowflakeReader(args, database), gold, args


@pytest.mark.integration
def test_the_snowflake_reader_returns_exactly_the_gold_rows_the_page_shows(seeded_fakesnow):
    reader, gold, _ = seeded_fakesnow
    check_reader(reader, gold)


@pytest.mark.integration
def test_the_snowflake_status_changes_when_gold_changes(seeded_fakesnow):
    import snowflake.connector

    reader, gold, args = seeded_fakesnow
    before = reader.status()
    assert reader.status() == before and before.published_at is None
    with snowflake.connector.connect(**args) as conn:
        conn.cursor().execute(
            f"UPDATE {reader.table('gold_kpi')} SET fetched_at = %s WHERE symbol = %s",
            (max(row[7] for row in gold.kpi) + dt.timedelta(seconds=1), gold.symbols[0]),
        )
    assert reader.status().version != before.version


@pytest.mark.integration
def test_a_snowflake_database_without_gold_says_no_data_yet(fakesnow_server):
    reader = SnowflakeReader(fakesnow_server.connection_kwargs(), "NO_SUCH_DATABASE")
    with pytest.raises(GoldEmpty, match="not in .* yet"):
        reader.kpis()


def test_an_unreachable_snowflake_is_explained_without_its_traceback():
    reader = SnowflakeReader(
        {"account": "x", "user": "u", "password": "p", "host": "127.0.0.1", "port": 9, "protocol": "http",
         "login_timeout": 2, "network_timeout": 2},
        "STOCK_PLATFORM",
    )  # fmt: skip
    with pytest.raises(GoldUnavailable, match="cannot read gold from Snowflake") as raised:
        reader.kpis()
    assert not isinstance(raised.value, GoldEmpty)


def test_the_dashboard_signs_in_to_snowflake_as_the_read_only_bi_user():
    env = {
        "WAREHOUSE": "snowflake",
        "SNOWFLAKE_ACCOUNT": "org-acct",
        "SNOWFLAKE_USER": "LOADER",  # the loader's sign-in is never the dashboard's
        "SNOWFLAKE_PASSWORD": "loader-secret",
        "DASHBOARD_SNOWFLAKE_USER": "STOCK_PLATFORM_DASHBOARD_SVC",
        "DASHBOARD_SNOWFLAKE_PRIVATE_KEY_PATH": "/keys/dashboard.p8",
        "DASHBOARD_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "pass-phrase",
    }
    args = snowflake_connection_args(load_settings(env))
    assert args["user"] == "STOCK_PLATFORM_DASHBOARD_SVC" and args["role"] == "STOCK_PLATFORM_BI_READER"
    assert args["warehouse"] == "STOCK_PLATFORM_BI_WH" and args["schema"] == "GOLD"
    assert args["private_key_file"] == "/keys/dashboard.p8" and args["private_key_file_pwd"] == "pass-phrase"
    assert "password" not in args and "LOADER" not in args.values()
    with pytest.raises(
        SettingsError, match="DASHBOARD_SNOWFLAKE_USER and DASHBOARD_SNOWFLAKE_PRIVATE_KEY_PATH"
    ):
        snowflake_connection_args(load_settings({"WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "org-acct"}))
