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


# ------------------------------------------------------------------------------------------------ fuzzing

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _mutated(draw: st.DrawFn) -> dict:
    record = dict(GOOD)
    for field in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=4, unique=True)):
        action = draw(st.sampled_from(["replace", "delete", "near"]))
        if action == "delete":
            del record[field]
        elif action == "near" and isinstance(GOOD[field], int | float) and not isinstance(GOOD[field], bool):
            # Values at and around the bounds, of both JSON number types.
            record[field] = draw(
                st.sampled_from([0, -1, 1, 0.5, 1e-4, 1e7, 1e7 + 1, 2**63, 1e308, 946_684_800, 4_102_444_800])
            )
        else:
            record[field] = draw(json_values)
    for _ in range(draw(st.integers(0, 1))):
        record[draw(st.text(max_size=6))] = draw(json_values)
    return record


mutated_records = st.composite(_mutated)()


def _assert_decodes_or_refuses(value: bytes | None) -> None:
    try:
        record = decode_record(value)
    except InvalidQuote as exc:
        assert str(exc) and len(str(exc)) < 400  # a reason, short whatever the input
        return
    # Anything accepted is a record no aggregate can turn infinite, and it survives a round trip.
    assert set(record) == set(GOOD)
    assert all(type(record[f]) is int for f in ("schema_version", "t", "fetched_at", "seq"))
    for f in ("c", "h", "l", "o", "pc"):
        assert type(record[f]) in (int, float) and 1e-4 <= record[f] <= 1e7
    assert record["symbol"] == record["symbol"].strip() and record["symbol"].isprintable()
    assert decode_record(encode_record(record)) == record


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_refused(value):
    _assert_decodes_or_refuses(value)


@given(json_values)
def test_any_json_decodes_or_is_refused(value):
    _assert_decodes_or_refuses(json.dumps(value).encode())


@given(mutated_records)
def test_any_mutation_of_a_good_record_decodes_or_is_refused(record):
    _assert_decodes_or_refuses(json.dumps(record).encode())


@given(st.integers(min_value=900, max_value=2040), st.sampled_from([b"[", b'{"a":']))
def test_nesting_past_the_recursion_limit_is_refused(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    value = opener * depth + b"1" + closer * depth
    if len(value) <= 4096:
        _assert_decodes_or_refuses(value)
