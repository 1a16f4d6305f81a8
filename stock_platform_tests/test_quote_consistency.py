"""Rules that keep what ingestion validates equal to what the warehouse loads, and its clocks consistent."""

from __future__ import annotations

import pytest

from stock_platform.quotes import (
    CLOCK_TOLERANCE_MS,
    MAX_CHANGE,
    MAX_PRICE,
    MIN_PRICE,
    InvalidQuote,
    decode_message,
    decode_record,
    encode_record,
)
from stock_platform_tests.test_quotes import GOOD

FETCHED = GOOD["fetched_at"]


def test_a_message_keyed_by_its_symbol_is_kept():
    assert decode_message(encode_record(GOOD), b"AAPL") == GOOD


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (b"MSFT", "Kafka message has key 'MSFT', not the record's symbol 'AAPL'"),
        (b"aapl", "Kafka message has key 'aapl', not the record's symbol 'AAPL'"),
        (None, "Kafka message has no key, not the record's symbol 'AAPL'"),
        (b"", "Kafka message has no key, not the record's symbol 'AAPL'"),
    ],
)
def test_a_message_keyed_otherwise_is_refused(key, reason):
    with pytest.raises(InvalidQuote, match=f"^{reason}$"):
        decode_message(encode_record(GOOD), key)


@pytest.mark.parametrize("skew_ms", [-86_400_000, -CLOCK_TOLERANCE_MS - 1, 3_600_000, 86_400_000])
def test_a_skewed_producer_clock_is_data_not_a_reason_to_refuse(skew_ms):
    # The minute is the broker's append time; fetched_at is what the producer's clock said.
    skewed = {**GOOD, "fetched_at": FETCHED + skew_ms, "t": (FETCHED + skew_ms) // 1000}
    assert decode_message(encode_record(skewed), b"AAPL") == skewed


def test_quote_time_may_be_old_but_not_after_the_fetch():
    old = {**GOOD, "t": 946_684_800}
    assert decode_record(encode_record(old)) == old
    at_limit = {**GOOD, "t": (FETCHED + CLOCK_TOLERANCE_MS) // 1000}
    assert decode_record(encode_record(at_limit)) == at_limit
    with pytest.raises(InvalidQuote, match="quote time 't' is more than 300 s after fetched_at"):
        decode_record(encode_record({**GOOD, "t": at_limit["t"] + 1}))


@pytest.mark.parametrize(
    "value",
    [
        encode_record(GOOD).replace(b'"c":189.5', b'"c":-1,"c":189.5'),
        encode_record(GOOD).replace(b'"seq":7', b'"seq":"x","seq":7'),
        encode_record(GOOD).replace(b'"c":189.5', b'"c":{"a":1,"b":2},"c":189.5'),
        # A colon hidden as an escape must not balance the duplicate's own colon.
        encode_record({**GOOD, "symbol": "X:Y"})
        .replace(b'"X:Y"', b'"X\\u003aY"')
        .replace(b'"c":189.5', b'"c":1,"c":189.5'),
        # The same field written twice in the same form.
        encode_record(GOOD).replace(b'"symbol":"AAPL"', b'"symbol":"AAPL","symbol":"AAPL"'),
    ],
)
def test_a_field_given_twice_is_refused(value):
    with pytest.raises(InvalidQuote, match=r"^duplicate field\(s\)$"):
        decode_record(value)


@pytest.mark.parametrize(
    "record",
    [
        {**GOOD, "symbol": "BINANCE:BTCUSDT"},
        {**GOOD, "symbol": "A:B:C", "producer_run_id": "run.2_x-3"},
    ],
)
def test_colons_and_escapes_in_a_record_without_duplicates_pass(record):
    assert decode_record(encode_record(record)) == record
    escaped = encode_record(record).replace(b":", b"\\u003a").replace(b'"\\u003a', b'":')
    assert decode_record(escaped) == record


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"c": 2**63}, "field 'c' is an integer outside the 64-bit range"),
        ({"pc": -(2**63)}, "field 'pc' is an integer outside the 64-bit range"),
        ({"seq": 2**63}, "field 'seq' must be a non-negative integer, got beyond 64 bits"),
        ({"source": "scraper"}, "field 'source' must be one of finnhub, simulated, replay"),
        ({"producer_run_id": "run\ud800"}, "field 'producer_run_id' must be a non-empty string of"),
        ({"producer_run_id": "a b"}, "field 'producer_run_id' must be a non-empty string of"),
        ({"producer_run_id": "r" * 65}, "field 'producer_run_id' must be a non-empty string of"),
    ],
)
def test_values_the_warehouse_cannot_hold_faithfully_are_refused(changes, reason):
    with pytest.raises(InvalidQuote) as refused:
        decode_record(encode_record({**GOOD, **changes}))
    assert reason in str(refused.value)


@pytest.mark.parametrize("price", [MIN_PRICE, 1.0, MAX_PRICE, int(MAX_PRICE)])
def test_prices_at_the_plausibility_bounds_pass(price):
    record = {**GOOD, "c": price, "h": MAX_PRICE, "l": MIN_PRICE, "o": price, "pc": price, "seq": 2**63 - 1}
    assert decode_record(encode_record(record)) == record


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"c": MAX_PRICE * 1.000001}, "price field 'c' is outside [0.0001, 1e+07]"),
        ({"l": MIN_PRICE / 2}, "price field 'l' is outside [0.0001, 1e+07]"),
        ({"pc": 1e308}, "price field 'pc' is outside [0.0001, 1e+07]"),
        ({"d": -MAX_CHANGE * 2}, "field 'd' is outside"),
        ({"dp": 1e300}, "field 'dp' is outside"),
        ({"t": 4_102_444_800}, "quote time 't' must be epoch seconds in [946684800, 4102444800)"),
        ({"t": 1.0e9}, "quote time 't' must be an integer"),
        ({"schema_version": 1.0}, "unsupported schema_version 1.0"),
        ({"symbol": "AAPL\n"}, "symbol 'AAPL\\n' is not a ticker"),
        ({"producer_run_id": "run-1\n"}, "field 'producer_run_id' must be a non-empty string"),
    ],
)
def test_implausible_or_inexact_values_are_refused(changes, reason):
    with pytest.raises(InvalidQuote) as refused:
        decode_record(encode_record({**GOOD, **changes}))
    assert reason in str(refused.value)
