"""The quote record: the one contract shared by the producer, the ingestion assets and dbt.

A record is one Finnhub ``/quote`` answer for one symbol, plus where and when it was fetched. It travels
as compact JSON: Kafka key = symbol, Kafka message timestamp = ``fetched_at``. The same validation runs
in the producer (before publishing) and in ingestion (before loading), so a record that one accepts the
other accepts too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1

# Finnhub's /quote fields: current, change, change %, high, low, open, previous close, quote time (epoch s).
PRICE_FIELDS = ("c", "h", "l", "o", "pc")
FINNHUB_FIELDS = ("c", "d", "dp", "h", "l", "o", "pc", "t")
RECORD_FIELDS = (
    "schema_version",
    "symbol",
    *FINNHUB_FIELDS,
    "fetched_at",  # UTC epoch milliseconds; also the Kafka message timestamp
    "source",  # finnhub | simulated | replay
    "producer_run_id",
    "seq",  # per producer run, strictly increasing: (producer_run_id, seq) identifies a record
)

# Exchange tickers: letters, digits and the class/suffix separators Finnhub uses (BRK.B, RDS-A, 7203.T).
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-:]{0,19}$")
SOURCES = ("finnhub", "simulated", "replay")
# An id, not free text: a lone UTF-16 surrogate escape ("\ud800") is valid JSON to Python but makes
# DuckDB refuse the whole minute's file, and control characters have no business in an id.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
MAX_RECORD_BYTES = 4096
# How far apart two clocks may be: fetched_at and the Kafka message timestamp (equal when the producer
# sets it, a delivery latency apart on a LogAppendTime topic), and Finnhub's quote time and fetched_at.
CLOCK_TOLERANCE_MS = 300_000


class InvalidQuote(ValueError):
    """A record that must not reach the main topic or the raw table; ``str(exc)`` is the reason."""


_RECORD_FIELD_SET = frozenset(RECORD_FIELDS)
_SOURCE_SET = frozenset(SOURCES)
# JSON integers are unbounded in Python; past 64 bits the warehouse turns them into null (DuckDB BIGINT)
# or infinity (DuckDB DOUBLE), so a price of 10**400 would reach silver as an infinite price.
_INT_LIMIT = 2**63


def _number(quote: Mapping[str, Any], field: str) -> float:
    value = quote[field]
    # Exact types: JSON numbers decode to int or float, and this also refuses bool (an int subclass).
    kind = type(value)
    if kind is float:
        if value - value != 0:  # inf - inf and nan - nan are nan; cheaper than math.isfinite per field
            raise InvalidQuote(f"field {field!r} is not finite: {value!r}")
    elif kind is int:
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise InvalidQuote(f"field {field!r} is an integer outside the 64-bit range")
    else:
        raise InvalidQuote(f"field {field!r} must be a number, got {kind.__name__}")
    return value


def validate_finnhub_quote(quote: Mapping[str, Any]) -> None:
    """Raise InvalidQuote unless ``quote`` is a usable Finnhub /quote answer.

    Finnhub answers an unknown symbol with every field zero (and d, dp null) rather than an error, so
    that is rejected with its own reason. Written for speed: ingestion runs it on every record.
    """
    try:
        c, d, dp, h, l, o, pc, t = [_number(quote, f) for f in FINNHUB_FIELDS]  # noqa: E741
    except (KeyError, InvalidQuote) as exc:
        if all(quote.get(f) in (0, None) for f in FINNHUB_FIELDS) and any(f in quote for f in PRICE_FIELDS):
            raise InvalidQuote("all-zero quote (Finnhub's answer for an unknown symbol)") from None
        missing = [f for f in FINNHUB_FIELDS if quote.get(f) is None]
        if missing:
            raise InvalidQuote(f"missing field(s): {', '.join(missing)}") from None
        raise exc
    if c > 0 and h > 0 and l > 0 and o > 0 and pc > 0 and h >= l and t > 0:
        return
    if not (c or d or dp or h or l or o or pc or t):
        raise InvalidQuote("all-zero quote (Finnhub's answer for an unknown symbol)")
    for f, v in zip(PRICE_FIELDS, (c, h, l, o, pc), strict=True):
        if v <= 0:
            raise InvalidQuote(f"price field {f!r} must be positive, got {float(v)!r}")
    if h < l:
        raise InvalidQuote(f"high {float(h)} is below low {float(l)}")
    raise InvalidQuote(f"quote time 't' must be positive epoch seconds, got {t!r}")


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise InvalidQuote unless ``record`` is a complete, well-typed quote record."""
    if not isinstance(record, Mapping):
        raise InvalidQuote(f"record must be a JSON object, got {type(record).__name__}")
    if record.keys() != _RECORD_FIELD_SET:
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise InvalidQuote(f"missing field(s): {', '.join(missing)}")
        extra = sorted(set(record) - _RECORD_FIELD_SET)
        raise InvalidQuote(f"unexpected field(s): {', '.join(extra)}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise InvalidQuote(f"unsupported schema_version {record['schema_version']!r}")
    symbol = record["symbol"]
    if type(symbol) is not str or not SYMBOL_PATTERN.match(symbol):
        raise InvalidQuote(f"symbol {symbol!r} is not a ticker (A-Z, 0-9, '.', '-', ':', at most 20)")
    validate_finnhub_quote(record)
    for f in ("fetched_at", "seq"):
        value = record[f]
        if type(value) is not int or not 0 <= value < _INT_LIMIT:
            shown = repr(value) if type(value) is not int or value < _INT_LIMIT else "beyond 64 bits"
            raise InvalidQuote(f"field {f!r} must be a non-negative integer, got {shown}")
    # Finnhub's t is the last trade, so it may be days old (a weekend, a halted symbol, a replay) but
    # never later than the fetch that returned it.
    if record["t"] * 1000 > record["fetched_at"] + CLOCK_TOLERANCE_MS:
        raise InvalidQuote(f"quote time 't' is more than {CLOCK_TOLERANCE_MS // 1000} s after fetched_at")
    if record["source"] not in _SOURCE_SET:
        raise InvalidQuote(f"field 'source' must be one of {', '.join(SOURCES)}")
    run_id = record["producer_run_id"]
    if type(run_id) is not str or not RUN_ID_PATTERN.match(run_id):
        raise InvalidQuote(
            "field 'producer_run_id' must be a non-empty string of A-Z, a-z, 0-9, '.', '_', '-' (at most 64)"
        )


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Compact JSON, the wire form of a record."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def decode_record(value: bytes | None) -> dict[str, Any]:
    """Parse and validate one Kafka message value; raise InvalidQuote with the reason if it is bad."""
    if value is None:
        raise InvalidQuote("empty message (tombstone)")
    if len(value) > MAX_RECORD_BYTES:
        raise InvalidQuote(f"message of {len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidQuote(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        # NaN/Infinity are not JSON; refuse them at parse time rather than as floats later.
        record = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidQuote(f"not JSON: {exc.msg} at char {exc.pos}") from None
    validate_record(record)
    if _has_duplicate_fields(value, text, record):
        # Python keeps a repeated field's last value and DuckDB its first (Snowflake's COPY refuses them,
        # ALLOW_DUPLICATE being false): the warehouse would not see the record that was validated.
        raise InvalidQuote("duplicate field(s)")
    return record


def decode_message(value: bytes | None, timestamp_ms: int) -> dict[str, Any]:
    """decode_record for a consumed Kafka message: also refuses a ``fetched_at`` that disagrees with the
    message timestamp, which is what assigns the record to its minute."""
    record = decode_record(value)
    skew = record["fetched_at"] - timestamp_ms
    if skew > CLOCK_TOLERANCE_MS:
        raise InvalidQuote(
            f"fetched_at is more than {CLOCK_TOLERANCE_MS // 1000} s after the Kafka timestamp"
        )
    if skew < -CLOCK_TOLERANCE_MS:
        raise InvalidQuote(
            f"fetched_at is more than {CLOCK_TOLERANCE_MS // 1000} s before the Kafka timestamp"
        )
    return record


def _has_duplicate_fields(value: bytes, text: str, record: Mapping[str, Any]) -> bool:
    # Every field of a validated record is present, and each occurrence of a field in the text has its
    # own colon; so a text with one colon per field holds none twice. Nor does one whose only other colons
    # are the symbol's, when no escape can hide a colon. Only other texts pay for a parse of every pair.
    colons = value.count(b":")
    if colons == len(RECORD_FIELDS):
        return False
    if b"\\" not in value and colons == len(RECORD_FIELDS) + record["symbol"].count(":"):
        return False
    pairs: list[list[tuple[str, Any]]] = []
    json.JSONDecoder(object_pairs_hook=pairs.append, parse_constant=_reject_constant).decode(text)
    top = pairs[-1]  # the outermost object closes last
    return len(top) != len({k for k, _ in top})


def _reject_constant(name: str) -> float:
    raise InvalidQuote(f"non-JSON number {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
