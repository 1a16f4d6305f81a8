"""The quote record: the one contract shared by the producer, the ingestion assets and dbt.

A record is one Finnhub ``/quote`` answer for one symbol, plus where and when it was fetched. It travels
as compact JSON: Kafka key = symbol, Kafka message timestamp = ``fetched_at``. The same validation runs
in the producer (before publishing) and in ingestion (before loading), so a record that one accepts the
other accepts too.
"""

from __future__ import annotations

import json
import math
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


def _number(record: Mapping[str, Any], field: str) -> float:
    value = record.get(field)
    # bool is an int subclass; a JSON true is never a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidQuote(f"field {field!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidQuote(f"field {field!r} is not finite: {value!r}")
    return float(value)


def validate_finnhub_quote(quote: Mapping[str, Any]) -> None:
    """Raise InvalidQuote unless ``quote`` is a usable Finnhub /quote answer.

    Finnhub answers an unknown symbol with every field zero rather than an error, so all-zero is rejected.
    """
    # Finnhub's unknown-symbol answer is {"c": 0, "d": null, "dp": null, "h": 0, ...}: say so, not "missing d".
    if all(quote.get(f) in (0, None) for f in FINNHUB_FIELDS) and any(f in quote for f in PRICE_FIELDS):
        raise InvalidQuote("all-zero quote (Finnhub's answer for an unknown symbol)")
    missing = [f for f in FINNHUB_FIELDS if f not in quote or quote[f] is None]
    if missing:
        raise InvalidQuote(f"missing field(s): {', '.join(missing)}")
    values = {f: _number(quote, f) for f in FINNHUB_FIELDS}
    for f in PRICE_FIELDS:
        if values[f] <= 0:
            raise InvalidQuote(f"price field {f!r} must be positive, got {values[f]!r}")
    if values["h"] < values["l"]:
        raise InvalidQuote(f"high {values['h']} is below low {values['l']}")
    if values["t"] <= 0:
        raise InvalidQuote(f"quote time 't' must be positive epoch seconds, got {values['t']!r}")


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise InvalidQuote unless ``record`` is a complete, well-typed quote record."""
    if not isinstance(record, Mapping):
        raise InvalidQuote(f"record must be a JSON object, got {type(record).__name__}")
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise InvalidQuote(f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(record) - set(RECORD_FIELDS))
    if extra:
        raise InvalidQuote(f"unexpected field(s): {', '.join(extra)}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise InvalidQuote(f"unsupported schema_version {record['schema_version']!r}")
    symbol = record["symbol"]
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise InvalidQuote(f"symbol {symbol!r} is not a ticker (A-Z, 0-9, '.', '-', ':', at most 20)")
    validate_finnhub_quote(record)
    for f in ("fetched_at", "seq"):
        if isinstance(record[f], bool) or not isinstance(record[f], int) or record[f] < 0:
            raise InvalidQuote(f"field {f!r} must be a non-negative integer, got {record[f]!r}")
    for f in ("source", "producer_run_id"):
        if not isinstance(record[f], str) or not record[f]:
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
        record = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidQuote(f"not JSON: {exc.msg} at char {exc.pos}") from None
    validate_record(record)
    return record


def _reject_constant(name: str) -> float:
    raise InvalidQuote(f"non-JSON number {name}")
