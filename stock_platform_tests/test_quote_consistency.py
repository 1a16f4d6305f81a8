"""Rules that keep what ingestion validates equal to what the warehouse loads, and its clocks consistent."""

from __future__ import annotations

import pytest

from stock_platform.quotes import (
    CLOCK_TOLERANCE_MS,
    InvalidQuote,
    decode_message,
    decode_record,
    encode_record,
)
from stock_platform_tests.test_quotes import GOOD

FETCHED = GOOD["fetched_at"]


@pytest.mark.parametrize("skew_ms", [0, CLOCK_TOLERANCE_MS, -CLOCK_TOLERANCE_MS])
def test_fetched_at_within_the_tolerance_of_the_kafka_timestamp_is_kept(skew_ms):
    assert decode_message(encode_record(GOOD), FETCHED - skew_ms) == GOOD


@pytest.mark.parametrize(
    ("timestamp_ms", "reason"),
    [
        (FETCHED - CLOCK_TOLERANCE_MS - 1, "fetched_at is more than 300 s after the Kafka timestamp"),
        (FETCHED + CLOCK_TOLERANCE_MS + 1, "fetched_at is more than 300 s before the Kafka timestamp"),
    ],
)
def test_fetched_at_far_from_the_kafka_timestamp_is_refused(timestamp_ms, reason):
    with pytest.raises(InvalidQuote, match=f"^{reason}$"):
        decode_message(encode_record(GOOD), timestamp_ms)


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


def test_largest_64_bit_values_pass():
    record = {**GOOD, "c": 2**63 - 1, "h": 2**63 - 1, "seq": 2**63 - 1}
    assert decode_record(encode_record(record)) == record
