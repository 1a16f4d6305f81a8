from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.producer.publisher import build_record
from stock_platform.producer.reference_prices import REFERENCE_PRICES
from stock_platform.producer.sources import (
    DEFAULT_SYMBOLS,
    MAX_SIMULATED_SYMBOLS,
    SimulatedSource,
    simulated_symbols,
)
from stock_platform.quotes import SYMBOL_PATTERN, validate_record

FETCHED_AT = 1_764_316_800_123


def test_ten_thousand_distinct_ticker_like_symbols_led_by_the_defaults():
    symbols = simulated_symbols(MAX_SIMULATED_SYMBOLS)
    assert len(symbols) == len(set(symbols)) == 10_000
    assert tuple(symbols[:5]) == DEFAULT_SYMBOLS
    assert all(SYMBOL_PATTERN.match(s) and 2 <= len(s) <= 5 for s in symbols)
    assert simulated_symbols(50, seed=3) == simulated_symbols(50, seed=3)
    # The seed picks the made-up names, which come after the well-known tickers.
    beyond_the_table = len(REFERENCE_PRICES) + 50
    assert simulated_symbols(beyond_the_table, seed=3) != simulated_symbols(beyond_the_table, seed=4)


@pytest.mark.parametrize("count", [0, MAX_SIMULATED_SYMBOLS + 1])
def test_symbol_count_out_of_range_is_refused(count):
    with pytest.raises(ValueError, match="between 1 and 10000"):
        simulated_symbols(count)


# The order simulated_symbols promises, written out from the table: the defaults, then the table's order.
KNOWN_ORDER = [*DEFAULT_SYMBOLS, *(s for s in REFERENCE_PRICES if s not in DEFAULT_SYMBOLS)]
# Counts around the end of the table are where the well-known tickers give way to made-up names.
COUNTS = st.one_of(st.integers(1, 2 * len(REFERENCE_PRICES)), st.integers(1, MAX_SIMULATED_SYMBOLS))


def test_the_reference_table_holds_the_defaults_and_ticker_like_names():
    assert set(DEFAULT_SYMBOLS) <= REFERENCE_PRICES.keys()
    assert 90 <= len(REFERENCE_PRICES) <= 110
    assert all(s.isascii() and s.isalpha() and s.isupper() and 2 <= len(s) <= 5 for s in REFERENCE_PRICES)
    assert all(type(p) is int and 1 <= p <= 10_000 for p in REFERENCE_PRICES.values())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), count=COUNTS)
def test_well_known_tickers_come_first_in_table_order_then_other_names(seed, count):
    symbols = simulated_symbols(count, seed)
    assert len(symbols) == len(set(symbols)) == count
    known = min(count, len(REFERENCE_PRICES))
    assert symbols[:known] == KNOWN_ORDER[:known]
    made_up = symbols[known:]
    assert not set(made_up) & REFERENCE_PRICES.keys()
    assert all(s.isascii() and s.isalpha() and s.isupper() and 2 <= len(s) <= 4 for s in made_up)


# The open is pc moved by a N(0, 80 bp) draw and the first tick moves it by a step of the N(0, 5 bp) table,
# so 6% (over 7 standard deviations of the open) holds for any seed one will ever meet.
FIRST_PRICE_BAND = 0.06


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    symbols=st.one_of(
        st.builds(simulated_symbols, COUNTS, st.integers(0, 2**32)),
        st.lists(
            st.one_of(st.sampled_from(list(REFERENCE_PRICES)), st.from_regex(r"[A-Z]{2,4}", fullmatch=True)),
            min_size=1,
            max_size=200,
            unique=True,
        ),
    ),
)
def test_well_known_tickers_start_near_their_reference_price(seed, symbols):
    quotes = SimulatedSource(symbols, seed=seed).take(len(symbols), FETCHED_AT)
    assert [q[0] for q in quotes] == symbols
    for symbol, c, _d, _dp, _h, _l, o, pc, _t, _fetched_at in quotes:
        pc_cents = round(pc * 100)
        assert pc_cents / 100 == pc  # whole cents
        if symbol in REFERENCE_PRICES:
            reference_cents = REFERENCE_PRICES[symbol] * 100
            assert abs(pc_cents - reference_cents) * 100 <= 3 * reference_cents, (symbol, pc)
        else:
            assert 500 <= pc_cents <= 90_000, (symbol, pc)  # log-uniform in [5, 900] dollars, as before
        assert abs(o - pc) <= FIRST_PRICE_BAND * pc, (symbol, o, pc)
        assert abs(c - pc) <= FIRST_PRICE_BAND * pc, (symbol, c, pc)


def test_the_seed_jitters_a_well_known_start_on_both_sides_of_the_reference():
    starts = [SimulatedSource(["AAPL"], seed=seed).take(1, FETCHED_AT)[0][7] for seed in range(40)]
    assert len(set(starts)) > 20
    assert min(starts) < REFERENCE_PRICES["AAPL"] < max(starts)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40), rounds=st.integers(1, 30))
def test_fields_agree_with_each_other(seed, n, rounds):
    source = SimulatedSource(simulated_symbols(n, seed), seed=seed)
    quotes = source.take(n * rounds, FETCHED_AT)
    assert [q[0] for q in quotes] == source.symbols * rounds
    opens: dict[str, float] = {}
    for seq, quote in enumerate(quotes):
        symbol, c, d, dp, high, low, o, pc, t, fetched_at = quote
        validate_record(build_record(quote, "simulated", "run", seq))
        assert round(d * 100) == round(c * 100) - round(pc * 100)  # d = c - pc, to the cent
        assert dp == pytest.approx(100 * d / pc, abs=5e-5 + 1e-9)  # rounded half away from zero
        assert high >= max(o, c) and low <= min(o, c)
        assert opens.setdefault(symbol, o) == o  # one session: the open does not move
        assert (t, fetched_at) == (FETCHED_AT // 1000, FETCHED_AT)


def test_the_same_seed_gives_the_same_prices_and_another_seed_does_not():
    symbols = simulated_symbols(20)
    first = SimulatedSource(symbols, seed=7).take(200, FETCHED_AT)
    again = SimulatedSource(symbols, seed=7).take(200, FETCHED_AT + 5000)
    other = SimulatedSource(symbols, seed=8).take(200, FETCHED_AT)
    assert [q[1:8] for q in first] == [q[1:8] for q in again]
    assert [q[1:8] for q in first] != [q[1:8] for q in other]


def test_prices_move_but_stay_realistic():
    source = SimulatedSource(simulated_symbols(100), seed=1)
    quotes = source.take(100 * 600, FETCHED_AT)  # ten minutes at one quote per symbol per second
    moved = {q[0] for q in quotes if q[1] != q[6]}
    assert len(moved) == 100
    assert all(0.5 < q[1] / q[7] < 2.0 for q in quotes)


def test_rate_paces_the_batches():
    source = SimulatedSource(simulated_symbols(10), rate=2000)
    stop = threading.Event()
    started = time.monotonic()
    emitted = 0
    for batch in source.batches(stop):
        emitted += len(batch)
        if time.monotonic() - started >= 0.5:
            break
    elapsed = time.monotonic() - started
    assert source.batch_size == 100
    # Never ahead of the budget (one batch of slack for the batch in hand).
    assert emitted <= 2000 * elapsed + source.batch_size


def test_a_stop_event_ends_the_feed():
    stop = threading.Event()
    stop.set()
    assert list(SimulatedSource(["AAPL"], rate=10).batches(stop)) == []
