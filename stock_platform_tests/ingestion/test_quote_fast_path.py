"""decode_record's orjson fast path decides exactly as the json path: same records, same reasons; and
ingestion's check, accepts_message, never accepts a message that decode_message refuses.

The fast path (stock_platform/quotes.py) only ever accepts; whatever it does not accept is decoded again
by the json path, which alone gives reasons. So the property to hold is: where the fast path accepts,
the json path accepts the same record (same fields, order, types and values). accepts_message (msgspec)
is held to the same rule: where it says yes, decode_message accepts the message under that key. These
tests compare them on records written the producer's way and on every kind of near miss: number
spellings around the bounds and past 64 bits, escapes, whitespace, duplicate, missing and extra fields,
and raw byte edits.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_platform import quotes
from stock_platform.quotes import InvalidQuote, accepts_message, decode_message, decode_record, encode_record
from stock_platform_tests import test_quotes

# The contract tests' record, with a ticker that has a '.' and a negative change.
GOOD: dict[str, Any] = {**test_quotes.GOOD, "symbol": "BRK.B", "d": -1.5}
NUMBER_FIELDS = ("schema_version", "c", "d", "dp", "h", "l", "o", "pc", "t", "fetched_at", "seq")
STRING_FIELDS = ("symbol", "source", "producer_run_id")


def outcome(value: Any, *, fast: bool) -> tuple[str, Any]:
    """What decode_record makes of ``value``, with or without the fast path."""
    saved = quotes._decode_fast
    quotes._decode_fast = saved if fast else (lambda _value: None)  # type: ignore[assignment]
    try:
        record = decode_record(value)
    except InvalidQuote as exc:
        return ("refused", str(exc))
    finally:
        quotes._decode_fast = saved  # type: ignore[assignment]
    # repr tells -0.0 from 0.0 and 1 from 1.0; the order of the fields is compared too.
    return ("accepted", [(k, type(v).__name__, repr(v)) for k, v in record.items()])


def assert_same_decision(value: Any) -> None:
    decided = outcome(value, fast=True)
    assert decided == outcome(value, fast=False)
    # accepts_message says yes only where decode_message accepts, under the record's own key or another.
    symbol = decode_record(value)["symbol"] if decided[0] == "accepted" else None
    for key in {None, b"BRK.B", b"AAPL", symbol.encode("utf-8", "replace") if symbol else None}:
        if accepts_message(value, key):
            assert decode_message(value, key)["symbol"].encode() == key
            assert b"\n" not in value and b"\r" not in value, "the value is embedded as one line"


# Number spellings: JSON's grammar and its near misses, values at the bounds written with more digits
# than a double holds (where two parsers could round differently), and integers around 64 bits.
BOUNDS = ["0.0001", "10000000", "946684800", "4102444800", "946684800000", "4102444800000", "1e13", "1"]
EDGE_TOKENS = [
    "-0", "-0.0", "0", "0.0", "1e400", "-1e400", "1E-400", "00", "01", "1.", ".5", "+1", "1e5", "1E+05",
    "NaN", "Infinity", "-Infinity", "true", "null", '"1"', "[]", "{}", "9223372036854775807",
    "9223372036854775808", "18446744073709551615", "18446744073709551616", "-9223372036854775809",
    "1" + "0" * 400, "0." + "0" * 300 + "1", "9999999.999999999999999999999", "0.000099999999999999999999",
    "1764316800.0", "1764316800e0", "17643168001e-1",
]  # fmt: skip


@st.composite
def near_bounds(draw: st.DrawFn) -> str:
    bound = draw(st.sampled_from(BOUNDS))
    head, dot, tail = bound.partition(".")
    digits = draw(st.text("0123456789", min_size=1, max_size=30))
    return f"{draw(st.sampled_from(['', '-']))}{head}.{tail}{digits}" if dot or "e" not in bound else bound


number_tokens = st.one_of(
    st.sampled_from(EDGE_TOKENS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
    near_bounds(),
)


@st.composite
def respelled(draw: st.DrawFn, value: float) -> str:
    """The same number, or one a rounding away from it, written another way JSON allows."""
    spellings = [repr(value), f"{value:.17g}", f"{value:.25f}", f"{value:.20e}", f"{value:E}", f"{value}e0"]
    if type(value) is int:
        spellings += [str(value), f"{value}.0", f"{value * 10}e-1", f"{value:.3e}"]
    spelled = draw(st.sampled_from(spellings))
    return spelled + ("0" * draw(st.integers(0, 20)) if "." in spelled and "e" not in spelled.lower() else "")


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.sampled_from(range(one_in))) == one_in // 2  # not an end: hypothesis favors those


string_values = st.one_of(
    st.sampled_from(["AAPL", "BRK.B", "7203.T", "X:Y", "aapl", "AAPL\n", "", "simulated", "replay", "run_1"]),
    st.text(max_size=24),
)


@st.composite
def record_texts(draw: st.DrawFn) -> bytes:
    """A record written as text, mostly the producer's way, with near misses drawn in."""
    pairs: list[tuple[str, str]] = []
    for field in GOOD:
        token = json.dumps(GOOD[field])
        if field in NUMBER_FIELDS and sometimes(draw, 3):
            token = draw(respelled(GOOD[field]))
        elif field in NUMBER_FIELDS and sometimes(draw, 12):
            token = draw(number_tokens)
        elif field in STRING_FIELDS and sometimes(draw, 12):
            token = json.dumps(draw(string_values), ensure_ascii=draw(st.booleans()))
        name = json.dumps(field)
        if sometimes(draw, 20):  # the same name, escaped: "s\u0079mbol"
            name = '"' + "".join(f"\\u{ord(ch):04x}" if ch in "sy" else ch for ch in field) + '"'
        pairs.append((name, token))
    edit = draw(st.sampled_from(["none"] * 4 + ["drop", "duplicate", "extra", "shuffle"] + ["none"] * 4))
    if edit == "drop":
        del pairs[draw(st.integers(0, len(pairs) - 1))]
    elif edit == "duplicate":
        name, _ = pairs[draw(st.integers(0, len(pairs) - 1))]
        pairs.insert(
            draw(st.integers(0, len(pairs))), (name, draw(number_tokens | string_values.map(json.dumps)))
        )
    elif edit == "extra":
        pairs.append((json.dumps(draw(st.text(max_size=6))), draw(number_tokens)))
    elif edit == "shuffle":
        pairs = draw(st.permutations(pairs))
    comma, colon = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t"), (",", ": ")]))
    text = "{" + comma.join(f"{name}{colon}{token}" for name, token in pairs) + "}"
    if sometimes(draw, 8):
        text = (
            draw(st.sampled_from(["", " ", "\n", "\ufeff"])) + text + draw(st.sampled_from([" ", "\n", "x"]))
        )
    value = text.encode("utf-8")
    for _ in range(draw(st.integers(1, 2)) if sometimes(draw, 6) else 0):  # raw byte edits
        at = draw(st.integers(0, len(value)))
        byte = bytes([draw(st.integers(0, 255))])
        value = value[:at] + byte + value[at + draw(st.integers(0, 1)) :]
    return value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_texts())
def test_fast_and_json_paths_agree_on_records_and_near_misses(value):
    assert_same_decision(value)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fast_and_json_paths_agree_on_any_bytes(value):
    assert_same_decision(value)


@settings(max_examples=500, deadline=None)
@given(
    c=st.floats(min_value=1e-4, max_value=1e7),
    d=st.floats(min_value=-1e7, max_value=1e7),
    dp=st.floats(min_value=-1e13, max_value=1e13),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_fast_and_json_paths_agree_on_the_producers_records(c, d, dp, seq):
    value = encode_record(
        {**GOOD, "c": c, "h": max(c, GOOD["h"]), "l": min(c, GOOD["l"]), "d": d, "dp": dp, "seq": seq}
    )
    assert_same_decision(value)
    assert outcome(value, fast=True)[0] == "accepted"
    assert accepts_message(value, b"BRK.B"), "ingestion takes its fast check for the producer's records"


@pytest.mark.parametrize(
    "value", [None, "text", bytearray(b"{}"), b"\xff" + encode_record(GOOD), b"x" * 5000]
)
def test_fast_and_json_paths_agree_on_values_that_are_not_records(value):
    assert_same_decision(value)


def test_the_producers_records_take_the_fast_path(monkeypatch):
    # If this breaks, ingestion silently loses the fast path (and most of its speed), not correctness.
    def json_path(value):
        raise AssertionError("decoded by the json path")

    monkeypatch.setattr(quotes, "_decode_record", json_path)
    assert decode_message(encode_record(GOOD), b"BRK.B") == GOOD


def test_the_remembered_tickers_stay_bounded(monkeypatch):
    monkeypatch.setattr(quotes, "_KNOWN_LIMIT", 3)
    monkeypatch.setattr(quotes, "_KNOWN_SYMBOLS", set())
    for symbol in ["A", "B", "C", "D", "E"]:
        assert decode_record(encode_record({**GOOD, "symbol": symbol}))["symbol"] == symbol
    assert len(quotes._KNOWN_SYMBOLS) <= 3
    with pytest.raises(InvalidQuote, match="is not a ticker"):
        decode_record(encode_record({**GOOD, "symbol": "E\n"}))
