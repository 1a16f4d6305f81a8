"""The record contract: what decode_record accepts, and the reason it gives for what it refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stock_platform.quotes import InvalidQuote, decode_record, encode_record, validate_record

GOOD = {
    "schema_version": 1,
    "symbol": "AAPL",
    "c": 189.5,
    "d": 1.5,
    "dp": 0.7979,
    "h": 190.0,
    "l": 187.25,
    "o": 188.0,
    "pc": 188.0,
    "t": 1_764_316_800,
    "fetched_at": 1_764_316_800_123,
    "source": "simulated",
    "producer_run_id": "run-1",
    "seq": 7,
}


def test_a_good_record_round_trips():
    assert decode_record(encode_record(GOOD)) == GOOD


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message (tombstone)"),
        (b'{"symbol": "AAPL", "c": ', "not JSON: Expecting value at char 24"),
        (b"\xff\xfe{}", "not UTF-8: invalid start byte at byte 0"),
        (b"[1, 2]", "record must be a JSON object, got list"),
        (encode_record({k: v for k, v in GOOD.items() if k != "c"}), "missing field(s): c"),
        (encode_record({**GOOD, "extra": 1}), "unexpected field(s): extra"),
        (encode_record({**GOOD, "c": "189.5"}), "field 'c' must be a number, got str"),
        (encode_record({**GOOD, "h": True}), "field 'h' must be a number, got bool"),
        (json.dumps({**GOOD, "c": float("nan")}).encode(), "non-JSON number NaN"),
        (json.dumps({**GOOD, "h": float("inf")}).encode(), "non-JSON number Infinity"),
        (encode_record({**GOOD, "c": -1.0}), "price field 'c' must be positive, got -1.0"),
        (encode_record({**GOOD, "o": 0}), "price field 'o' must be positive, got 0.0"),
        (encode_record({**GOOD, "h": 180.0}), "high 180.0 is below low 187.25"),
        (
            encode_record({**GOOD, **dict.fromkeys(("c", "d", "dp", "h", "l", "o", "pc", "t"), 0)}),
            "all-zero quote (Finnhub's answer for an unknown symbol)",
        ),
        (encode_record({**GOOD, "symbol": "AAPL'; drop table x;--"}), "is not a ticker"),
        (encode_record({**GOOD, "schema_version": 2}), "unsupported schema_version 2"),
        (encode_record({**GOOD, "seq": -1}), "field 'seq' must be a non-negative integer, got -1"),
        (encode_record({**GOOD, "fetched_at": 1.5}), "field 'fetched_at' must be a non-negative integer"),
        (encode_record({**GOOD, "producer_run_id": ""}), "field 'producer_run_id' must be a non-empty string"),
        (b" " * 5000, "message of 5000 bytes exceeds 4096"),
    ],
    ids=[
        "tombstone", "broken-json", "non-utf8", "not-object", "missing-field", "extra-field", "string-price",
        "bool-price", "nan", "infinity", "negative-price", "zero-price", "high-below-low", "all-zero",
        "sql-in-symbol", "schema-version", "negative-seq", "float-timestamp", "empty-run-id", "oversized",
    ],
)  # fmt: skip
def test_bad_records_are_refused_with_their_reason(value, reason):
    with pytest.raises(InvalidQuote) as refused:
        decode_record(value)
    assert reason in str(refused.value)


prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(c=prices, o=prices, pc=prices, spread=st.floats(min_value=0, max_value=100))
def test_any_consistent_quote_is_accepted(c, o, pc, spread):
    low = min(c, o) / (1 + spread / 100)
    high = max(c, o) * (1 + spread / 100)
    record = {**GOOD, "c": c, "o": o, "pc": pc, "h": high, "l": low, "d": c - pc, "dp": 100 * (c - pc) / pc}
    validate_record(record)
    assert decode_record(encode_record(record)) == record
