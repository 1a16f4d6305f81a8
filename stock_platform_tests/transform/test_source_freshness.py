"""`dbt source freshness` on the raw table: the newest loaded minute against the thresholds of
models/staging/__sources.yml (warn after 5 minutes, error after 30), on DuckDB and on fakesnow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import snowflake.connector

from stock_platform.services.raw_quotes import Quote, envelope, insert_duckdb, insert_snowflake
from stock_platform_tests.fakesnow_databases import create_bronze_database, dbt_env
from stock_platform_tests.transform.dbt_in_process import DbtInProcess

pytestmark = pytest.mark.integration

# Minutes since the newest loaded minute began -> the status dbt must report.
AGES = {2: "pass", 12: "warn", 90: "error"}

Load = Callable[[list[dict[str, Any]]], None]


def raw_rows(age_minutes: int, now: dt.datetime) -> list[dict[str, Any]]:
    """An older minute and the newest one, ``age_minutes`` before the minute of ``now`` (naive UTC):
    freshness must read the newest."""
    rows = []
    for offset, minutes_ago in enumerate((age_minutes + 240, age_minutes)):
        minute = now - dt.timedelta(minutes=minutes_ago)
        fetched_ms = int(minute.replace(tzinfo=dt.UTC).timestamp() * 1000) + 500
        quote = Quote("AAA", fetched_ms // 1000, fetched_ms, 100.0, offset)
        rows.append(envelope(quote.record(), kafka_partition=0, kafka_offset=offset, minute=minute))
    return rows


def freshness(dbt: DbtInProcess) -> tuple[str, float]:
    (result,) = dbt.invoke("source", "freshness", check=False).results
    return str(result.status), result.age


def assert_statuses(dbt: DbtInProcess, load: Load) -> None:
    for age, status in AGES.items():
        minute = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
        load(raw_rows(age, minute))
        got, age_s = freshness(dbt)
        checked = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        assert got == status, f"newest minute {age} min old: {got} (age {age_s:.0f} s), expected {status}"
        # The age is that of the newest minute: it began `age` minutes before the minute the rows were
        # made in, and dbt measured it at some moment before `checked` (a loaded machine may cross into
        # the next minute meanwhile).
        assert age * 60 <= age_s <= age * 60 + (checked - minute).total_seconds()


@pytest.fixture(scope="module")
def duckdb_dbt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DbtInProcess, Load]]:
    work = tmp_path_factory.mktemp("freshness_duckdb")
    path = str(work / "warehouse.duckdb")

    def load(envelopes: list[dict[str, Any]]) -> None:
        with duckdb.connect(path) as conn:
            conn.execute("drop table if exists main.bronze_stock_quotes_raw")
            insert_duckdb(conn, envelopes)

    load([])
    yield DbtInProcess({"DBT_TARGET": "duckdb", "DUCKDB_PATH": path}, work), load


def test_duckdb_raw_table_freshness_follows_the_newest_loaded_minute(duckdb_dbt):
    assert_statuses(*duckdb_dbt)


def test_an_empty_raw_table_is_an_error(duckdb_dbt):
    dbt, load = duckdb_dbt
    load([])
    assert freshness(dbt)[0] == "error"


def test_fakesnow_raw_table_freshness_reads_the_envelope_minute(fakesnow_server, tmp_path: Path):
    database = create_bronze_database(fakesnow_server, "FRESH")
    kwargs = fakesnow_server.connection_kwargs(database=database, schema="BRONZE")

    def load(envelopes: list[dict[str, Any]]) -> None:
        with snowflake.connector.connect(**kwargs) as conn:
            conn.cursor().execute("create or replace table bronze_stock_quotes_raw (v variant)")
            insert_snowflake(conn, envelopes)

    load([])
    assert_statuses(DbtInProcess(dbt_env(fakesnow_server, database), tmp_path), load)
