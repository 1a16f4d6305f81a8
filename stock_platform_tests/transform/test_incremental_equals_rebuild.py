"""Incremental equals rebuild (DESIGN.md invariant 8), as a property, on DuckDB and on fakesnow.

Hypothesis generates a stream of quote records with every kind of disorder (duplicates and redeliveries at
other offsets, two topics, earlier fetches of a quote arriving after later ones, replays hours old, exact
ties on quote time and fetched_at across record ids, a producer reusing a record id, invalid records) AND
the schedule that loads it: each (topic, minute) slice of the raw table is loaded and re-loaded (a reload
replaces exactly that slice, with the records it had plus any late ones, as DuckDBWarehouse.load_minutes
does) in a generated order, and every load is followed by an incremental dbt run over exactly the loaded
minutes, per minute or as one range. After every run silver and gold must equal figures computed here from
the raw table (expected_gold.py, written from the model YAML); at the end, a run without a window (a
manual `dbt run`) must change nothing, and the tables must equal a `--full-refresh` of the same raw table.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import snowflake.connector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_platform.quotes import MAX_PRICE, MIN_PRICE
from stock_platform.services.raw_quotes import DUCKDB_RAW_TABLE_DDL, Quote, envelope, insert_duckdb
from stock_platform_tests.fakesnow_databases import create_bronze_database, dbt_env
from stock_platform_tests.transform import expected_gold
from stock_platform_tests.transform.dbt_in_process import DbtInProcess
from stock_platform_tests.transform.expected_gold import LoadedRow

pytestmark = pytest.mark.integration

BASE = dt.datetime(2026, 11, 27, 14, 30)  # minute 0 of the stream, naive UTC
BASE_S = int(BASE.replace(tzinfo=dt.UTC).timestamp())
TOPICS = ("stock-quotes", "stock-quotes-replay")
SYMBOLS = ("AAA", "BB.B", "C-1")
RUN_IDS = ("run-a", "run-b", "run.c")
ARRIVAL_MINUTES = 4  # minutes 0-3 of arrival (the loaded minutes)
WAVES = 2  # a slice is loaded with its first records, then possibly re-loaded with late ones

SILVER_SQL = (
    "select symbol, {epoch_s}, record_id, price, change, change_pct, day_high, day_low, day_open, prev_close,"
    " {epoch_ms}, source, producer_run_id, seq, minute, topic, kafka_partition, kafka_offset"
    " from silver.silver_quotes"
)
REJECTED_SQL = (
    "select minute, topic, kafka_partition, kafka_offset, symbol, record_id, rejection_reason"
    " from silver.silver_rejected_quotes"
)
KPI_SQL = (
    "select symbol, price, change, change_pct, day_high, day_low, day_open, prev_close, as_of, fetched_at"
    " from gold.gold_kpi"
)
CANDLES_SQL = (
    "select symbol, grain, bucket_start, open, high, low, close, sample_count, first_quote_ts, last_quote_ts"
    " from gold.gold_candlestick"
)
TREECHART_SQL = (
    "select symbol, window_start, window_end, candle_count, return_count, avg_price, last_price, volatility,"
    " relative_volatility from gold.gold_treechart"
)


# --- the generated stream and schedule ---------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    record: dict[str, Any]
    topic: str
    kafka_partition: int
    minute: int  # arrival (loaded) minute, 0 .. ARRIVAL_MINUTES - 1
    wave: int  # the load of its slice that first holds it
    kafka_offset: int = -1

    @property
    def slice(self) -> tuple[str, int]:
        return (self.topic, self.minute)

    def row(self) -> LoadedRow:
        return LoadedRow(
            self.record, minute_at(self.minute), self.topic, self.kafka_partition, self.kafka_offset
        )


@dataclass
class Schedule:
    messages: list[Message]
    # Each step: the (topic, minute, wave) loads it makes, then its dbt runs as (first, last) minutes.
    steps: list[tuple[list[tuple[str, int, int]], list[tuple[int, int]]]] = field(default_factory=list)

    def describe(self) -> str:
        return "\n".join(f"loads {loads} then runs {runs}" for loads, runs in self.steps)


def minute_at(n: int) -> dt.datetime:
    return BASE + dt.timedelta(minutes=n)


@st.composite
def quote_records(draw: st.DrawFn) -> dict[str, Any]:
    """A quote record; small domains so that keys, fetch times and record ids collide."""
    replay = draw(st.integers(0, 9)) == 0
    t = BASE_S - 3 * 3600 + draw(st.integers(0, 4)) * 50 if replay else BASE_S + draw(st.integers(0, 40)) * 7
    fetched_at = t * 1000 + draw(st.sampled_from([-300_000, -1000, 0, 0, 400, 999, 20_000, 240_000]))
    price = draw(
        st.sampled_from([MIN_PRICE, 1.0, 99.5, 100.0, 100.25, 250.0, MAX_PRICE])
        | st.floats(MIN_PRICE, MAX_PRICE, allow_subnormal=False)
    )
    q = Quote(
        draw(st.sampled_from(SYMBOLS)), t, fetched_at, price, draw(st.integers(0, 30)),
        draw(st.sampled_from(RUN_IDS)), min(price + 5, MAX_PRICE), max(price - 5, MIN_PRICE),
    )  # fmt: skip
    record = q.record()
    invalid = draw(st.integers(0, 14))
    if invalid == 0:
        record["c"] = -1.0
    elif invalid == 1:
        record["h"], record["l"] = record["l"], record["h"] + 1
    elif invalid == 2:
        record["t"] = float(t)
    return record


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    records = draw(st.lists(quote_records(), min_size=3, max_size=24))
    # A producer reusing a record id for other content: a tie on symbol, quote time, fetched_at and
    # record id, which only the loaded minute, topic, partition and offset break.
    for record in draw(st.lists(st.sampled_from(records), max_size=2)):
        records.append({**record, "c": record["l"], "d": 0.5})
    messages: list[Message] = []
    for record in records:
        # Redeliveries: the same record (same id, same content) at other offsets, other minutes, topics.
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
            messages.append(
                Message(
                    record,
                    draw(st.sampled_from(TOPICS)),
                    draw(st.integers(0, 1)),
                    draw(st.integers(0, ARRIVAL_MINUTES - 1)),
                    draw(st.integers(0, WAVES - 1)),
                )  # fmt: skip
            )
    # Offsets grow with the arrival minute along each Kafka partition (order within a minute: drawn).
    messages = draw(st.permutations(messages))
    next_offset: dict[tuple[str, int], int] = {}
    placed = []
    for m in sorted(messages, key=lambda m: m.minute):
        at = (m.topic, m.kafka_partition)
        placed.append(Message(**{**m.__dict__, "kafka_offset": next_offset.get(at, 0)}))
        next_offset[at] = next_offset.get(at, 0) + 1
    # Loads: every wave of every slice that has records, plus some re-runs of a load; in a drawn order,
    # the waves of a slice in increasing order (a reload never removes a record).
    loads = sorted({(m.topic, m.minute, w) for m in placed for w in range(m.wave, WAVES)})
    loads += draw(st.lists(st.sampled_from(loads), max_size=2)) if loads else []
    loads = draw(st.permutations(loads))
    waves_of: dict[tuple[str, int], list[int]] = {}
    for topic, minute, wave in loads:
        waves_of.setdefault((topic, minute), []).append(wave)
    for waves in waves_of.values():
        waves.sort(reverse=True)
    ordered = [(topic, minute, waves_of[(topic, minute)].pop()) for topic, minute, _ in loads]
    schedule = Schedule(placed)
    i = 0
    while i < len(ordered):
        size = draw(st.integers(1, 3))
        step, i = ordered[i : i + size], i + size
        minutes = sorted({minute for _, minute, _ in step})
        # One range run over the loaded minutes (a catch-up), or one run per minute partition.
        runs = [(minutes[0], minutes[-1])] if draw(st.booleans()) else [(m, m) for m in minutes]
        schedule.steps.append((step, runs))
    return schedule


# --- warehouses ----------------------------------------------------------------------------------------


class Warehouse:
    """The raw table and the dbt outputs of one target; reset between examples."""

    dbt: DbtInProcess
    epoch_s: str
    epoch_ms: str

    def reset(self) -> None:
        raise NotImplementedError

    def load(self, topic: str, minute: int, messages: list[Message]) -> None:
        """Replace the (topic, minute) slice of the raw table by these messages."""
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        silver = SILVER_SQL.format(epoch_s=self.epoch_s, epoch_ms=self.epoch_ms)
        return {
            "silver": sorted(self.query(silver)),
            "rejected": sorted(self.query(REJECTED_SQL), key=repr),
            "kpi": sorted(self.query(KPI_SQL)),
            "candles": sorted(self.query(CANDLES_SQL)),
            "treechart": sorted(self.query(TREECHART_SQL), key=lambda r: r[0]),
        }


class DuckDB(Warehouse):
    epoch_s = "epoch(quote_ts)::bigint"
    epoch_ms = "epoch_ms(fetched_at)"

    def __init__(self, work: Path) -> None:
        self.path = str(work / "warehouse.duckdb")
        self.dbt = DbtInProcess({"DBT_TARGET": "duckdb", "DUCKDB_PATH": self.path}, work)

    def reset(self) -> None:
        with duckdb.connect(self.path) as conn:
            conn.execute("drop schema if exists silver cascade")
            conn.execute("drop schema if exists gold cascade")
            conn.execute("drop table if exists main.bronze_stock_quotes_raw")
            conn.execute(DUCKDB_RAW_TABLE_DDL)

    def load(self, topic: str, minute: int, messages: list[Message]) -> None:
        with duckdb.connect(self.path) as conn:
            conn.execute("begin transaction")
            conn.execute(
                "delete from main.bronze_stock_quotes_raw where minute = ? and topic = ?",
                [minute_at(minute), topic],
            )
            insert_duckdb(conn, [envelope_of(m) for m in messages])
            conn.execute("commit")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(self.path) as conn:
            return conn.execute(sql).fetchall()


class Fakesnow(Warehouse):
    epoch_s = "date_part(epoch_second, quote_ts)"
    epoch_ms = "date_part(epoch_millisecond, fetched_at)"

    def __init__(self, server: Any, work: Path) -> None:
        self.database = create_bronze_database(server, "INC")
        self.kwargs = server.connection_kwargs(database=self.database, schema="BRONZE")
        self.dbt = DbtInProcess(dbt_env(server, self.database), work)

    def reset(self) -> None:
        with snowflake.connector.connect(**self.kwargs) as conn:
            cur = conn.cursor()
            cur.execute(f"drop schema if exists {self.database}.silver cascade")
            cur.execute(f"drop schema if exists {self.database}.gold cascade")
            cur.execute("create or replace table bronze_stock_quotes_raw (v variant)")

    def load(self, topic: str, minute: int, messages: list[Message]) -> None:
        iso = minute_at(minute).strftime("%Y-%m-%dT%H:%M:%SZ")
        with snowflake.connector.connect(**self.kwargs) as conn:
            cur = conn.cursor()
            cur.execute(
                "delete from bronze_stock_quotes_raw where v:minute::varchar = %s and v:topic::varchar = %s",
                [iso, topic],
            )
            if messages:
                selects = " union all ".join("select parse_json(%s)" for _ in messages)
                cur.execute(
                    f"insert into bronze_stock_quotes_raw (v) {selects}",
                    [json.dumps(envelope_of(m)) for m in messages],
                )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with snowflake.connector.connect(**self.kwargs) as conn:
            return [tuple(r) for r in conn.cursor().execute(sql).fetchall()]


def envelope_of(m: Message) -> dict[str, Any]:
    # The Kafka timestamp is the producer's fetch time, as on a CreateTime topic: it disagrees with the
    # loaded minute, which is what silver must use on every dialect.
    return envelope(
        m.record, m.kafka_partition, m.kafka_offset, minute=minute_at(m.minute), topic=m.topic,
        timestamp_ms=m.record["fetched_at"],
    )  # fmt: skip


# --- the property ----------------------------------------------------------------------------------------


def expected(rows: list[LoadedRow]) -> dict[str, list[tuple[Any, ...]]]:
    """What silver and gold must hold for these raw rows, from the model YAML's definitions."""
    kept = expected_gold.silver_rows(rows)
    silver = []
    for (symbol, t), row in kept.items():
        r = row.record
        silver.append(
            (symbol, t, f"{r['producer_run_id']}:{r['seq']}", float(r["c"]), float(r["d"]), float(r["dp"]),
             float(r["h"]), float(r["l"]), float(r["o"]), float(r["pc"]), r["fetched_at"], r["source"],
             r["producer_run_id"], r["seq"], row.minute, row.topic, row.kafka_partition, row.kafka_offset)
        )  # fmt: skip
    quotes = [row.quote() for row in kept.values()]
    rejected = {(r.minute, r.topic, r.kafka_partition, r.kafka_offset) for r in rows if not r.valid}
    return {
        "silver": sorted(silver),
        "rejected_at": sorted(rejected),
        "kpi": sorted(expected_gold.kpi(quotes)),
        "candles": sorted(expected_gold.candles(quotes)),
        "treechart": expected_gold.treechart(quotes),
    }


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_rows_close(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}\n{got}\n{want}"
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) and all(close(a, b) for a, b in zip(g, w, strict=True)), f"{what}: {g} != {w}"


def assert_matches_expected(got: dict[str, list[tuple[Any, ...]]], want: dict[str, Any], when: str) -> None:
    assert got["silver"] == want["silver"], when
    assert sorted(r[:4] for r in got["rejected"]) == want["rejected_at"], when
    assert all(r[6] is not None for r in got["rejected"]), when
    kpi = sorted((r[0], r[1], r[8]) for r in got["kpi"])
    assert kpi == want["kpi"], when
    assert sorted(r[:8] for r in got["candles"]) == want["candles"], when
    tree = want["treechart"]
    assert [r[0] for r in got["treechart"]] == sorted(tree), when
    for symbol, start, end, candles, returns, avg, last, vol, rel in got["treechart"]:
        w = tree[symbol]
        assert (start, end, candles, returns) == (
            w["window_start"], w["window_end"], w["candle_count"], w["return_count"]
        ), when  # fmt: skip
        for name, value in (("avg_price", avg), ("last_price", last), ("volatility", vol)):
            assert close(value, w[name]) or value == w[name] is None, f"{when}: {symbol} {name}"
        if w["relative_volatility"] is None:
            assert rel is None, f"{when}: {symbol} relative_volatility"
        else:
            assert close(rel, w["relative_volatility"]), f"{when}: {symbol} relative_volatility"


def check_schedule(warehouse: Warehouse, schedule: Schedule) -> None:
    warehouse.reset()
    loaded: dict[tuple[str, int], list[Message]] = {}
    for n, (loads, runs) in enumerate(schedule.steps):
        for topic, minute, wave in loads:
            slice_messages = [m for m in schedule.messages if m.slice == (topic, minute) and m.wave <= wave]
            warehouse.load(topic, minute, slice_messages)
            loaded[(topic, minute)] = slice_messages
        for first, last in runs:
            warehouse.dbt.invoke("run", window=(minute_at(first), minute_at(last + 1)))
        rows = [m.row() for messages in loaded.values() for m in messages]
        assert_matches_expected(
            warehouse.snapshot(), expected(rows), f"after step {n}\n{schedule.describe()}"
        )
    incremental = warehouse.snapshot()
    # A manual incremental run without a window reads the whole raw table, and changes nothing.
    warehouse.dbt.invoke("run")
    again = warehouse.snapshot()
    for name in ("silver", "rejected", "kpi", "candles"):
        assert again[name] == incremental[name], f"{name} changed by a run without a window"
    # The same raw table rebuilt from scratch, with every data test.
    warehouse.dbt.invoke("build", "--full-refresh", "--exclude-resource-type", "unit_test")
    rebuilt = warehouse.snapshot()
    for name in ("silver", "rejected", "kpi", "candles"):
        assert incremental[name] == rebuilt[name], (
            f"{name} differs from a full refresh\n{schedule.describe()}"
        )
    assert_rows_close(incremental["treechart"], rebuilt["treechart"], "treechart vs full refresh")


@pytest.fixture(scope="module")
def duckdb_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDB]:
    yield DuckDB(tmp_path_factory.mktemp("incremental_duckdb"))


@pytest.fixture(scope="module")
def fakesnow_warehouse(fakesnow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakesnow]:
    yield Fakesnow(fakesnow_server, tmp_path_factory.mktemp("incremental_fakesnow"))


SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


def property_test(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    # Each example makes several dbt runs (about half a second each on DuckDB, a few on fakesnow).
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=SLOW, print_blob=True)


@property_test(max_examples=8)
@given(schedule=schedules())
def test_duckdb_incremental_runs_equal_the_oracle_and_a_full_refresh(duckdb_warehouse, schedule):
    check_schedule(duckdb_warehouse, schedule)


@property_test(max_examples=2)
@given(schedule=schedules())
def test_fakesnow_incremental_runs_equal_the_oracle_and_a_full_refresh(fakesnow_warehouse, schedule):
    check_schedule(fakesnow_warehouse, schedule)
