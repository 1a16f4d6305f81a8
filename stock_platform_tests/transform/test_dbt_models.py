"""The dbt models on DuckDB (through Dagster) and on fakesnow (Snowflake's dialect), on the same raw input.

Each warehouse gets two dbt invocations: a first full build, then, after minute 4 and late records of
minutes 0, 2 and 3 were loaded, the incremental run over the loaded minutes 0-4 (one range run, as a
catch-up makes). Gold is compared with figures computed in Python (expected_gold.py) and between the two
warehouses. test_incremental_equals_rebuild.py generates such sequences; this one goes through Dagster.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import snowflake.connector

from stock_platform.partitions import minute_key
from stock_platform.services.raw_quotes import insert_duckdb, insert_snowflake
from stock_platform.transform.definitions import dbt_model_assets, project
from stock_platform.transform.project import dbt_executable
from stock_platform.transform.window import dbt_build_args
from stock_platform_tests.fakesnow_databases import create_bronze_database, dbt_env
from stock_platform_tests.transform import expected_gold
from stock_platform_tests.transform.scenario import Scenario, build_scenario

pytestmark = pytest.mark.integration

CANDLES_SQL = (
    "select symbol, grain, bucket_start, open, high, low, close, sample_count from gold.gold_candlestick"
)
KPI_SQL = "select symbol, price, as_of from gold.gold_kpi"
TREECHART_SQL = (
    "select symbol, window_start, window_end, candle_count, return_count, avg_price, last_price, volatility,"
    " relative_volatility from gold.gold_treechart"
)


@dataclass
class Gold:
    candles: set[tuple[Any, ...]]
    kpi: set[tuple[Any, ...]]
    treechart: set[tuple[Any, ...]]
    silver_rows: int
    silver_distinct_record_ids: int
    rejected: dict[str, int]


def read_gold(query: Any) -> Gold:
    """``query(sql) -> list of tuples``; floats rounded so both warehouses compare exactly."""

    def rows(sql: str) -> set[tuple[Any, ...]]:
        return {expected_gold.rounded(r) for r in query(sql)}

    ((silver_rows, distinct_ids),) = query(
        "select count(*), count(distinct record_id) from silver.silver_quotes"
    )
    rejected = dict(
        query(
            "select rejection_reason, count(*) from silver.silver_rejected_quotes group by rejection_reason"
        )
    )
    return Gold(rows(CANDLES_SQL), rows(KPI_SQL), rows(TREECHART_SQL), silver_rows, distinct_ids, rejected)


def run_dbt(args: list[str], env: dict[str, str], target_path: Path) -> None:
    result = subprocess.run(
        [dbt_executable(), *args, "--target-path", str(target_path)],
        cwd=project.project_dir, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    # Yesterday 14:30 UTC: inside the minute partitions' retention, and never the still-open minute.
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    return build_scenario(dt.datetime(yesterday.year, yesterday.month, yesterday.day, 14, 30, tzinfo=dt.UTC))


@dataclass
class DuckDBOutcome:
    first: Gold
    final: Gold
    result: dg.ExecuteInProcessResult
    env: dict[str, str]
    range_tags: dict[str, str]
    query: Any


@pytest.fixture(scope="module")
def duckdb_outcome(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBOutcome]:
    work = tmp_path_factory.mktemp("dbt_duckdb")
    path = work / "warehouse.duckdb"
    env = {"DBT_TARGET": "duckdb", "DUCKDB_PATH": str(path)}

    def query(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    with duckdb.connect(str(path)) as conn:
        insert_duckdb(conn, scenario.first_envelopes)
    # First build: every model from scratch, with the dbt unit tests (DuckDB holds their fixtures' types).
    run_dbt(["build"], env, work / "target")
    first = read_gold(query)

    with duckdb.connect(str(path)) as conn:
        insert_duckdb(conn, scenario.late_envelopes)
    # The run over the loaded minutes, as Dagster makes it: one run of a partition range, whose window
    # becomes the dbt models' window.
    first_minute, end = (scenario.minute(n) for n in scenario.late_minutes)
    range_tags = {
        "dagster/asset_partition_range_start": minute_key(first_minute),
        "dagster/asset_partition_range_end": minute_key(end - dt.timedelta(minutes=1)),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        result = dg.materialize(dbt_model_assets, tags=range_tags, raise_on_error=False)
    yield DuckDBOutcome(first, read_gold(query), result, env, range_tags, query)


@pytest.fixture(scope="module")
def fakesnow_outcome(
    scenario: Scenario, fakesnow_server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gold, Gold]]:
    work = tmp_path_factory.mktemp("dbt_fakesnow")
    database = create_bronze_database(fakesnow_server, "DBT")
    env = dbt_env(fakesnow_server, database)
    kwargs = fakesnow_server.connection_kwargs(database=database, schema="BRONZE")

    def query(sql: str) -> list[tuple[Any, ...]]:
        with snowflake.connector.connect(**kwargs) as conn:
            return conn.cursor().execute(sql).fetchall()

    with snowflake.connector.connect(**kwargs) as conn:
        insert_snowflake(conn, scenario.first_envelopes)
    # dbt unit tests run on DuckDB only: their raw fixture is JSON text, which Snowflake keeps as a string.
    run_dbt(["build", "--exclude-resource-type", "unit_test"], env, work / "target")
    first = read_gold(query)

    with snowflake.connector.connect(**kwargs) as conn:
        insert_snowflake(conn, scenario.late_envelopes)
    run_dbt(dbt_build_args(*(scenario.minute(n) for n in scenario.late_minutes)), env, work / "target")
    yield first, read_gold(query)


def oracle(quotes) -> tuple[set, set, set]:
    silver = expected_gold.silver(quotes)
    tree = expected_gold.treechart(silver)
    treechart = {
        expected_gold.rounded(
            (s, r["window_start"], r["window_end"], r["candle_count"], r["return_count"], r["avg_price"],
             r["last_price"], r["volatility"], r["relative_volatility"])
        )
        for s, r in tree.items()
    }  # fmt: skip
    candles = {expected_gold.rounded(r) for r in expected_gold.candles(silver)}
    return candles, {expected_gold.rounded(r) for r in expected_gold.kpi(silver)}, treechart


def test_first_build_equals_figures_computed_from_the_quotes(duckdb_outcome, scenario):
    candles, kpi, treechart = oracle(scenario.first_quotes)
    assert duckdb_outcome.first.candles == candles
    assert duckdb_outcome.first.kpi == kpi
    assert duckdb_outcome.first.treechart == treechart
    # 3 symbols x 4 minutes x 6 quotes, the Kafka redelivery and the Finnhub repeat collapsed.
    assert duckdb_outcome.first.silver_rows == duckdb_outcome.first.silver_distinct_record_ids == 72
    assert duckdb_outcome.first.rejected == {
        "price out of range": 1,
        "high below low": 1,
        "not an object of exactly the record fields": 1,
    }


def test_incremental_run_takes_every_late_record_of_the_minutes_it_covers(duckdb_outcome, scenario):
    candles, kpi, treechart = oracle([*scenario.first_quotes, *scenario.late_quotes])
    final = duckdb_outcome.final
    assert final.candles == candles
    assert final.kpi == kpi
    assert final.treechart == treechart
    # 18 new quotes of minute 4, BBB's late new high and AAA's late new low; the late repeat of an AAA
    # quote collapsed.
    assert final.silver_rows == final.silver_distinct_record_ids == 72 + 18 + 2

    def candle(gold: Gold, symbol: str, grain: str, start: dt.datetime) -> tuple[Any, ...]:
        (row,) = [c for c in gold.candles if c[:3] == (symbol, grain, start)]
        return row

    naive = scenario.base.replace(tzinfo=None)
    minute2, minute0, day = naive + dt.timedelta(minutes=2), naive, naive.replace(hour=0, minute=0)
    # The late BBB quote of minute 2 raised that minute's and that day's high, and nothing else of them.
    before, after = (
        candle(duckdb_outcome.first, "BBB", "minute", minute2),
        candle(final, "BBB", "minute", minute2),
    )
    assert (after[4], after[7]) == (999.0, before[7] + 1)
    assert after[3] == before[3] and after[5:7] == before[5:7]
    assert candle(final, "BBB", "day", day)[4] == 999.0
    # The AAA quote loaded four minutes late into minute 0 (price 1.0) is taken: a new low of its minute
    # and of the day, and nothing else of that minute changed.
    before, after = (
        candle(duckdb_outcome.first, "AAA", "minute", minute0),
        candle(final, "AAA", "minute", minute0),
    )
    assert (after[5], after[7]) == (1.0, before[7] + 1)
    assert after[3:5] == before[3:5] and after[6] == before[6]
    assert candle(final, "AAA", "day", day)[5] == 1.0
    # A quote re-sent later with the same quote time keeps the first price (555 never appears).
    assert all(555.0 not in c[3:7] for c in final.candles)
    assert final.rejected == duckdb_outcome.first.rejected


def test_dagster_run_materializes_every_model_and_reports_dbt_tests_as_checks(duckdb_outcome):
    result = duckdb_outcome.result
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {
        "silver_quotes",
        "silver_rejected_quotes",
        "gold_kpi",
        "gold_candlestick",
        "gold_treechart",
    }
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert len(checks) == 31
    # The window (minutes 0-4) holds the three invalid records of minute 1: a warning.
    warned = checks.pop("no_rows_in_window_silver_rejected_quotes_minute")
    assert (warned.passed, warned.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert warned.metadata["dagster_dbt/failed_row_count"].value == 3
    assert all(c.passed for c in checks.values()), [name for name, c in checks.items() if not c.passed]


def test_a_tests_only_run_evaluates_every_data_test_and_changes_no_table(duckdb_outcome, monkeypatch):
    """What a dbt_tests_job run does (orchestration/jobs.py): the incremental models' data tests only, over
    the run's minutes, as asset checks; no model is rebuilt."""
    for name, value in duckdb_outcome.env.items():
        monkeypatch.setenv(name, value)
    incremental = [a for a in dbt_model_assets if a.partitions_def is not None]
    result = dg.materialize(
        incremental, selection=dg.AssetSelection.all_asset_checks(), tags=duckdb_outcome.range_tags
    )
    assert result.get_asset_materialization_events() == []
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    on_views = {c.check_name for c in duckdb_outcome.result.get_asset_check_evaluations()} - set(checks)
    assert {c.split("_gold_treechart")[0] != c for c in on_views} == {True}  # only the view's tests left out
    warned = checks.pop("no_rows_in_window_silver_rejected_quotes_minute")
    assert warned.metadata["dagster_dbt/failed_row_count"].value == 3
    assert all(c.passed for c in checks.values()), [name for name, c in checks.items() if not c.passed]
    assert read_gold(duckdb_outcome.query) == duckdb_outcome.final


def test_fakesnow_gives_the_same_gold_rows_as_duckdb(duckdb_outcome, fakesnow_outcome):
    for duck, snow in zip((duckdb_outcome.first, duckdb_outcome.final), fakesnow_outcome, strict=True):
        assert snow.candles == duck.candles
        assert snow.kpi == duck.kpi
        assert snow.treechart == duck.treechart
        assert (snow.silver_rows, snow.rejected) == (duck.silver_rows, duck.rejected)
