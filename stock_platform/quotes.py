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
MAX_RECORD_BYTES = 4096


class InvalidQuote(ValueError):
    """A record that must not reach the main topic or the raw table; ``str(exc)`` is the reason."""


_RECORD_FIELD_SET = frozenset(RECORD_FIELDS)
# JSON numbers decode to exactly int or float; checking the exact type also refuses bool (an int subclass).
_NUMBER_TYPES = (int, float)


def _number(quote: Mapping[str, Any], field: str) -> float:
    value = quote[field]
    if type(value) not in _NUMBER_TYPES:
        raise InvalidQuote(f"field {field!r} must be a number, got {type(value).__name__}")
    if value - value != 0:  # inf - inf and nan - nan are nan; cheaper than math.isfinite per field
        raise InvalidQuote(f"field {field!r} is not finite: {value!r}")
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
        if type(record[f]) is not int or record[f] < 0:
            raise InvalidQuote(f"field {f!r} must be a non-negative integer, got {record[f]!r}")
    for f in ("source", "producer_run_id"):
        if type(record[f]) is not str or not record[f]:
            raise InvalidQuote(f"field {f!r} must be a non-empty string")


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
    return record


def _reject_constant(name: str) -> float:
    raise InvalidQuote(f"non-JSON number {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
