from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.producer.publisher import build_record
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
    assert simulated_symbols(50, seed=3) != simulated_symbols(50, seed=4)


@pytest.mark.parametrize("count", [0, MAX_SIMULATED_SYMBOLS + 1])
def test_symbol_count_out_of_range_is_refused(count):
    with pytest.raises(ValueError, match="between 1 and 10000"):
        simulated_symbols(count)


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
