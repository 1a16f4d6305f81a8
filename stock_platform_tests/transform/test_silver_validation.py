"""Silver's validation agrees with ingestion's on every input: a generated quote object is taken into
silver_quotes exactly when stock_platform.quotes.validate_record accepts it, and is in
silver_rejected_quotes otherwise.

The objects are mutations of valid records (a field replaced by any JSON value: nested JSON, any text,
numbers written as strings, huge integers, floats at the bounds, numbers written as 1.0 or 1e3, booleans,
null; fields removed or added; symbols with a trailing line break; escaped strings; not an object at all). On DuckDB each
hypothesis example evaluates a batch of them with the compiled SQL of the two silver models in an in-memory
database (one query each, no dbt run per example); on fakesnow one dbt run takes a batch of a few hundred.
Rules on the message bytes (UTF-8, size, duplicate keys) cannot reach the raw table and are not compared;
neither are lone UTF-16 surrogates (DuckDB refuses such JSON, and so does ingestion).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pytest
import snowflake.connector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_platform.quotes import (
    CLOCK_TOLERANCE_MS,
    MAX_CHANGE,
    MAX_CHANGE_PCT,
    MAX_EPOCH_MS,
    MAX_EPOCH_S,
    MAX_PRICE,
    MIN_EPOCH_MS,
    MIN_EPOCH_S,
    MIN_PRICE,
    RECORD_FIELDS,
    RUN_ID_PATTERN,
    SCHEMA_VERSION,
    SOURCES,
    SYMBOL_PATTERN,
    InvalidQuote,
    validate_record,
)
from stock_platform.services.raw_quotes import DUCKDB_RAW_TABLE_DDL
from stock_platform.transform.project import DBT_PROJECT_DIR
from stock_platform_tests.fakesnow_databases import create_bronze_database, dbt_env
from stock_platform_tests.transform.dbt_in_process import DbtInProcess

pytestmark = pytest.mark.integration

MINUTE = dt.datetime(2026, 11, 27, 14, 30)
INT_LIMIT = 2**63

# --- generated quote objects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON number written as given (1.0, 1e3, -0, 1E400...), where json.dumps would write its own form."""

    text: str


def near(x: float) -> list[float]:
    return [math.nextafter(x, -math.inf), x, math.nextafter(x, math.inf)]


NUMBER_EDGES = [
    *near(MIN_PRICE), *near(MAX_PRICE), *near(-MAX_CHANGE), *near(MAX_CHANGE), *near(-MAX_CHANGE_PCT),
    *near(MAX_CHANGE_PCT), 0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.0, 1.0, 100.0,
]  # fmt: skip
INT_EDGES = [
    0, 1, -1, 2, MIN_EPOCH_S - 1, MIN_EPOCH_S, MAX_EPOCH_S - 1, MAX_EPOCH_S, MIN_EPOCH_MS - 1, MIN_EPOCH_MS,
    MAX_EPOCH_MS - 1, MAX_EPOCH_MS, INT_LIMIT - 1, INT_LIMIT, -INT_LIMIT, -INT_LIMIT - 1, 2**64, 10**30,
    10**400, int(MAX_PRICE), int(MAX_PRICE) + 1,
]  # fmt: skip
RAW_NUMBERS = ["1.0", "1e3", "1E400", "-1e400", "1e-400", "-0", "-0.0", "100.000", "1795000000.0", "0.0001",
               "0.00009999999999999999", "10000000.000000001", "9223372036854775808", "1.5e1"]  # fmt: skip

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(INT_EDGES)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(NUMBER_EDGES)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
# Strings that read as numbers, which DuckDB's lenient conversions would turn into valid-looking values: a
# field of the contract's type only is kept, so each must still be rejected where a number is required.
NUMERIC_TEXTS = ["1", "100.5", "-1", "1e3", "0", " 7", "1795000000", "1795000000000", "true", "1.0"]
field_values = json_values | st.sampled_from(RAW_NUMBERS).map(Raw) | st.sampled_from(NUMERIC_TEXTS)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    prices = st.floats(MIN_PRICE, MAX_PRICE) | st.sampled_from([MIN_PRICE, MAX_PRICE, 1, 100, 10_000_000])
    low, high = sorted([draw(prices), draw(prices)])
    t = draw(st.integers(MIN_EPOCH_S, MAX_EPOCH_S - 1) | st.sampled_from([MIN_EPOCH_S, MAX_EPOCH_S - 1]))
    earliest = max(MIN_EPOCH_MS, t * 1000 - CLOCK_TOLERANCE_MS)
    fetched_at = draw(st.integers(earliest, MAX_EPOCH_MS - 1) | st.just(earliest))
    return {
        "schema_version": 1,
        "symbol": draw(st.from_regex(r"[A-Z0-9][A-Z0-9.\-:]{0,19}", fullmatch=True)),
        "c": draw(prices),
        "d": draw(st.floats(-MAX_CHANGE, MAX_CHANGE) | st.integers(-int(MAX_CHANGE), int(MAX_CHANGE))),
        "dp": draw(st.floats(-MAX_CHANGE_PCT, MAX_CHANGE_PCT)),
        "h": high,
        "l": low,
        "o": draw(prices),
        "pc": draw(prices),
        "t": t,
        "fetched_at": fetched_at,
        "source": draw(st.sampled_from(SOURCES)),
        "producer_run_id": draw(st.from_regex(r"[A-Za-z0-9._\-]{1,64}", fullmatch=True)),
        "seq": draw(st.integers(0, INT_LIMIT - 1) | st.sampled_from([0, INT_LIMIT - 1])),
    }


NEAR_MISSES = {
    "symbol": ["AAPL\n", "aapl", "AAPL ", " AAPL", ".AAPL", "A" * 20, "A" * 21, "", "BRK.B", "7203.T", "X:Y-Z",
               "ÅAPL", "AAPL\u0000", "A\u200bB"],
    "producer_run_id": ["run 1", "run\n", "r" * 64, "r" * 65, "", "run/1", "rün", "run-1.a_b"],
    "source": ["Finnhub", "finnhub ", "FINNHUB", "replay\n", "simulated"],
    "schema_version": [1, 1.0, True, "1", 2, 0, Raw("1.0"), Raw("1e0")],
}  # fmt: skip


@st.composite
def quote_objects(draw: st.DrawFn) -> Any:
    """A valid record, mutated 0-3 times; the value as JSON-ready data (Raw numbers inside)."""
    if draw(st.integers(0, 40)) == 0:
        return draw(json_values)  # not an object, or an arbitrary one
    record: dict[str, Any] = draw(valid_records())
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["replace", "replace", "near", "delete", "add", "clock"]))
        name = draw(st.sampled_from(RECORD_FIELDS))
        if kind == "replace":
            record[name] = draw(field_values)
        elif kind == "near":
            options = NEAR_MISSES.get(name)
            if options is None:
                options = INT_EDGES if name in ("t", "fetched_at", "seq") else NUMBER_EDGES
            record[name] = draw(st.sampled_from(options) | st.sampled_from(RAW_NUMBERS).map(Raw))
        elif kind == "delete":
            record.pop(name, None)
        elif kind == "add":
            key = draw(texts | st.sampled_from(["C", "c ", "Symbol", "symbol\n", "seq2", "quote", ""]))
            record[key] = draw(field_values)
        elif isinstance(record.get("fetched_at"), int):  # "clock": t at the tolerance, or one past it
            record["t"] = (record["fetched_at"] + CLOCK_TOLERANCE_MS) // 1000 + draw(st.sampled_from([0, 1]))
    return record


def to_json(value: Any, ensure_ascii: bool, escape_all: bool) -> str:
    """JSON text of ``value``; Raw numbers verbatim; ``escape_all`` writes every string character as \\uXXXX."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (
            f"{to_json(k, ensure_ascii, escape_all)}:{to_json(v, ensure_ascii, escape_all)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ensure_ascii, escape_all) for v in value) + "]"
    if isinstance(value, str) and escape_all and all(ord(ch) < 0x10000 for ch in value):
        return '"' + "".join(f"\\u{ord(ch):04x}" for ch in value) + '"'
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=False)


@st.composite
def quote_texts(draw: st.DrawFn) -> str:
    return to_json(draw(quote_objects()), draw(st.booleans()), draw(st.integers(0, 9)) == 0)


# --- verdicts ----------------------------------------------------------------------------------------------


def python_accepts(text: str) -> bool:
    try:
        validate_record(json.loads(text))
    except InvalidQuote:
        return False
    return True


def envelope_text(quote_text: str, offset: int) -> str:
    head = {"minute": MINUTE.strftime("%Y-%m-%dT%H:%M:%SZ"), "topic": "stock-quotes", "kafka_partition": 0,
            "kafka_offset": offset, "kafka_timestamp_ms": 1795000000000, "object_key": "validation"}  # fmt: skip
    return json.dumps(head)[:-1] + ',"quote":' + quote_text + "}"


def expected_silver(texts: list[str]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(symbol, t) -> the row silver keeps of the accepted records (its tie rules: fetched_at, record id,
    then offset, all in one minute, topic and partition here)."""
    kept: dict[tuple[str, int], tuple[Any, ...]] = {}
    for offset, text in enumerate(texts):
        if not python_accepts(text):
            continue
        r = json.loads(text)
        record_id = f"{r['producer_run_id']}:{r['seq']}"
        row = (
            r["fetched_at"], record_id, offset, r["symbol"], r["t"], float(r["c"]), float(r["d"]),
            float(r["dp"]), float(r["h"]), float(r["l"]), float(r["o"]), float(r["pc"]), r["source"],
            r["producer_run_id"], r["seq"],
        )  # fmt: skip
        key = (r["symbol"], r["t"])
        if key not in kept or row[:3] < kept[key][:3]:
            kept[key] = row
    return kept


def assert_verdicts(texts: list[str], rejected: list[tuple[int, str]], silver: list[tuple[Any, ...]]) -> None:
    """``rejected``: (kafka_offset, reason); ``silver``: rows in expected_silver's layout."""
    want_rejected = {offset for offset, text in enumerate(texts) if not python_accepts(text)}
    got_rejected = {offset for offset, _ in rejected}
    wrong = sorted(want_rejected ^ got_rejected)
    assert not wrong, "\n".join(
        f"offset {o}: python {'rejects' if o in want_rejected else 'accepts'}, silver "
        f"{'rejects' if o in got_rejected else 'accepts'}: {texts[o]}"
        for o in wrong
    )
    assert all(reason for _, reason in rejected)
    want = expected_silver(texts)
    got = {(row[3], row[4]): row for row in silver}
    assert got == want


# --- DuckDB: the compiled SQL of both models, one query each per example ---------------------------------


@dataclass
class CompiledSilver:
    silver_sql: str
    rejected_sql: str
    finite_sql: str  # gold_treechart's `finite` test


def compiled_finite_test(dbt: DbtInProcess) -> str:
    result = dbt.invoke("compile", "--select", "test_name:finite,gold_treechart")
    (sql,) = [r.node.compiled_code for r in result.results if r.node.resource_type == "test"]
    return sql


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompiledSilver]:
    work = tmp_path_factory.mktemp("silver_validation")
    path = work / "verdicts.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(DUCKDB_RAW_TABLE_DDL)
    dbt = DbtInProcess({"DBT_TARGET": "duckdb", "DUCKDB_PATH": str(path)}, work)
    dbt.invoke("compile", "--select", "silver_quotes", "silver_rejected_quotes")
    folder = work / "target" / "compiled" / "stock_platform" / "models" / "silver"
    yield CompiledSilver(
        (folder / "silver_quotes.sql").read_text(),
        (folder / "silver_rejected_quotes.sql").read_text(),
        compiled_finite_test(dbt),
    )


SILVER_COLUMNS = (
    "epoch_ms(fetched_at), record_id, kafka_offset, symbol, epoch(quote_ts)::bigint, price, change, change_pct,"
    " day_high, day_low, day_open, prev_close, source, producer_run_id, seq"
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(quote_texts(), min_size=1, max_size=25))
def test_duckdb_silver_accepts_exactly_what_validate_record_accepts(compiled, batch):
    assert_duckdb_verdicts(compiled, batch)


# Each field of a valid record set to each value: values of every JSON type, and the ones DuckDB's lenient
# conversions read as a valid value of another type (true as 1, "7" as 7, 1.5 as 2, an object as text).
WRONG_TYPES = [True, False, None, 1, 0, 1.5, Raw("1.0"), Raw("1e0"), "1", "1.5", "true", "AAPL", [1], {"a": 1},
               {"c": 1.0}, [], INT_LIMIT, 2**64]  # fmt: skip


def test_duckdb_silver_takes_each_field_only_in_its_contract_type(compiled):
    base = {
        "schema_version": 1, "symbol": "AAPL", "c": 1.0, "d": 1, "dp": 1.0, "h": 1.5, "l": 1, "o": 1.0,
        "pc": 1.0, "t": 1796437080, "fetched_at": 1796437080000, "source": "simulated",
        "producer_run_id": "1", "seq": 1,
    }  # fmt: skip
    assert python_accepts(to_json(base, True, False))
    batch = []
    for name in RECORD_FIELDS:
        for value in WRONG_TYPES:
            # A distinct quote time per record, so silver keeps every record it accepts.
            record = {**base, "t": base["t"] + len(batch), name: value}
            batch.append(to_json(record, True, False))
    assert_duckdb_verdicts(compiled, batch)


def assert_duckdb_verdicts(compiled: CompiledSilver, batch: list[str]) -> None:
    with duckdb.connect() as conn:
        conn.execute("attach ':memory:' as verdicts")
        conn.execute("use verdicts")
        conn.execute(DUCKDB_RAW_TABLE_DDL)
        conn.executemany(
            "insert into main.bronze_stock_quotes_raw values (?, ?, 'validation', 0, ?, ?, 'stock-quotes')",
            [(envelope_text(text, offset), MINUTE, offset, MINUTE) for offset, text in enumerate(batch)],
        )
        # As dbt builds them: silver_quotes first, then silver_rejected_quotes from the rows it left out.
        conn.execute("create schema silver")
        conn.execute(f"create table silver.silver_quotes as {compiled.silver_sql}")
        rejected = conn.execute(
            f"select kafka_offset, rejection_reason from ({compiled.rejected_sql})"
        ).fetchall()
        silver = conn.execute(f"select {SILVER_COLUMNS} from silver.silver_quotes").fetchall()
    assert_verdicts(batch, rejected, silver)


# --- fakesnow: one dbt run over a few hundred objects ----------------------------------------------------


@pytest.fixture(scope="module")
def fakesnow_validation(fakesnow_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    database = create_bronze_database(fakesnow_server, "VAL")
    dbt = DbtInProcess(
        dbt_env(fakesnow_server, database), tmp_path_factory.mktemp("silver_validation_fakesnow")
    )
    yield (
        dbt,
        fakesnow_server.connection_kwargs(database=database, schema="BRONZE"),
        compiled_finite_test(dbt),
    )


@settings(
    max_examples=1, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
                           HealthCheck.large_base_example],
)  # fmt: skip
@given(batch=st.lists(quote_texts(), min_size=300, max_size=300))
def test_fakesnow_silver_accepts_exactly_what_validate_record_accepts(fakesnow_validation, batch):
    dbt, kwargs, _ = fakesnow_validation
    with snowflake.connector.connect(**kwargs) as conn:
        cur = conn.cursor()
        cur.execute("create or replace table bronze_stock_quotes_raw (v variant)")
        for start in range(0, len(batch), 100):
            chunk = list(enumerate(batch))[start : start + 100]
            selects = " union all ".join("select parse_json(%s)" for _ in chunk)
            cur.execute(
                f"insert into bronze_stock_quotes_raw (v) {selects}", [envelope_text(t, o) for o, t in chunk]
            )
    dbt.invoke("run", "--full-refresh", "--select", "silver_quotes", "silver_rejected_quotes")
    with snowflake.connector.connect(**kwargs) as conn:
        cur = conn.cursor()
        rejected = cur.execute(
            "select kafka_offset, rejection_reason from silver.silver_rejected_quotes"
        ).fetchall()
        silver = cur.execute(
            "select date_part(epoch_millisecond, fetched_at), record_id, kafka_offset, symbol,"
            " date_part(epoch_second, quote_ts), price, change, change_pct, day_high, day_low, day_open,"
            " prev_close, source, producer_run_id, seq from silver.silver_quotes"
        ).fetchall()
    assert_verdicts(batch, [tuple(r) for r in rejected], [tuple(r) for r in silver])


def test_generated_objects_cover_both_verdicts() -> None:
    """The strategy is worth its time only if it produces accepted and rejected records alike."""
    verdicts: list[bool] = []

    @settings(max_examples=200, database=None, derandomize=True)
    @given(quote_texts())
    def collect(text: str) -> None:
        verdicts.append(python_accepts(text))

    collect()
    assert 0.1 < sum(verdicts) / len(verdicts) < 0.9, sum(verdicts) / len(verdicts)


# --- the constants silver restates ------------------------------------------------------------------------


def sql_contract() -> dict[str, Any]:
    """quote_contract() of macros/parse_quotes.sql, read as the Python literal it also is."""
    text = (DBT_PROJECT_DIR / "macros" / "parse_quotes.sql").read_text()
    literal = re.search(r"return\((\{.*?\})\)", text, re.S)
    assert literal is not None
    return ast.literal_eval(literal.group(1))


def test_silver_states_the_same_bounds_as_the_record_contract() -> None:
    c = sql_contract()
    assert float(c["min_price"]) == MIN_PRICE and float(c["max_price"]) == MAX_PRICE
    assert float(c["max_change"]) == MAX_CHANGE and float(c["max_change_pct"]) == MAX_CHANGE_PCT
    assert (c["min_epoch_s"], c["max_epoch_s"]) == (MIN_EPOCH_S, MAX_EPOCH_S)
    assert (c["min_epoch_s"] * 1000, c["max_epoch_s"] * 1000) == (MIN_EPOCH_MS, MAX_EPOCH_MS)
    assert c["clock_tolerance_ms"] == CLOCK_TOLERANCE_MS
    assert c["schema_version"] == SCHEMA_VERSION
    assert c["field_count"] == len(set(RECORD_FIELDS))
    assert tuple(c["sources"]) == SOURCES


@settings(max_examples=300, database=None)
@given(
    st.text(st.sampled_from("AZaz09.-:_ \n/é"), max_size=66)
    | st.from_regex(SYMBOL_PATTERN)
    | st.from_regex(RUN_ID_PATTERN)
)
def test_silver_patterns_accept_the_same_strings(value: str) -> None:
    # RE2 (DuckDB) and Snowflake's POSIX patterns are written without escapes, so Python's re reads them
    # the same; the SQL match is whole-string.
    c = sql_contract()
    assert bool(re.fullmatch(c["symbol_pattern"], value)) == bool(SYMBOL_PATTERN.match(value))
    assert bool(re.fullmatch(c["run_id_pattern"], value)) == bool(RUN_ID_PATTERN.match(value))


# --- gold's `finite` test, on both dialects ---------------------------------------------------------------

# symbol, avg_price, last_price, volatility, relative_volatility (the last two nullable); the symbols that
# start with "BAD" must be flagged.
TREECHART_ROWS = [
    ("OK", 100.0, 101.0, 0.01, 1.0),
    ("NULLS", 100.0, 101.0, None, None),
    ("LARGE", 1e300, -1e300, 0.0, 0.0),
    ("BAD_NAN", math.nan, 101.0, 0.01, 1.0),
    ("BAD_INF", 100.0, math.inf, 0.01, 1.0),
    ("BAD_NEG_INF", 100.0, 101.0, -math.inf, 1.0),
    ("BAD_NAN_NULLABLE", 100.0, 101.0, 0.01, math.nan),
    ("BAD_NULL", None, 101.0, 0.01, 1.0),
]


def test_duckdb_finite_test_flags_nan_infinities_and_unexpected_nulls(compiled):
    with duckdb.connect() as conn:
        conn.execute("attach ':memory:' as verdicts")
        conn.execute("create schema verdicts.gold")
        conn.execute(
            "create table verdicts.gold.gold_treechart (symbol varchar, avg_price double, last_price double,"
            " volatility double, relative_volatility double)"
        )
        conn.executemany("insert into verdicts.gold.gold_treechart values (?, ?, ?, ?, ?)", TREECHART_ROWS)
        flagged = {row[0] for row in conn.execute(f"select symbol from ({compiled.finite_sql})").fetchall()}
    assert flagged == {row[0] for row in TREECHART_ROWS if row[0].startswith("BAD")}


def test_fakesnow_finite_test_flags_nan_infinities_and_unexpected_nulls(fakesnow_validation):
    _, kwargs, finite_sql = fakesnow_validation
    shown = [tuple(None if v is None else str(v) for v in row) for row in TREECHART_ROWS]
    with snowflake.connector.connect(**kwargs) as conn:
        cur = conn.cursor()
        cur.execute("create schema if not exists gold")
        cur.execute(
            "create or replace table gold.gold_treechart (symbol varchar, avg_price float, last_price float,"
            " volatility float, relative_volatility float)"
        )
        for row in shown:
            cur.execute(
                "insert into gold.gold_treechart select %s, cast(%s as float), cast(%s as float),"
                " cast(%s as float), cast(%s as float)",
                list(row),
            )
        flagged = {r[0] for r in cur.execute(f"select symbol from ({finite_sql})").fetchall()}
    assert flagged == {row[0] for row in TREECHART_ROWS if row[0].startswith("BAD")}
