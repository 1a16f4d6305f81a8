"""The quote record: the one contract shared by the producer, the ingestion assets and dbt.

A record is one Finnhub ``/quote`` answer for one symbol, plus where and when it was fetched. It travels
as compact JSON with Kafka key = symbol; the broker stamps each message with its append time
(LogAppendTime), which decides its minute. ``fetched_at`` and ``t`` are data. The same validation runs
in the producer (before publishing) and in ingestion (before loading), so a record that one accepts the
other accepts too.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import orjson

SCHEMA_VERSION = 1

# Finnhub's /quote fields: current, change, change %, high, low, open, previous close, quote time (epoch s).
PRICE_FIELDS = ("c", "h", "l", "o", "pc")
FINNHUB_FIELDS = ("c", "d", "dp", "h", "l", "o", "pc", "t")
RECORD_FIELDS = (
    "schema_version",
    "symbol",
    *FINNHUB_FIELDS,
    "fetched_at",  # UTC epoch milliseconds on the producer's clock: data, not the record's minute
    "source",  # finnhub | simulated | replay
    "producer_run_id",
    "seq",  # per producer run, strictly increasing: (producer_run_id, seq) identifies a record
)

# Exchange tickers: letters, digits and the class/suffix separators Finnhub uses (BRK.B, RDS-A, 7203.T).
# Anchored with \Z, not $: "$" also matches before a trailing line break, and "AAPL\n" would become a
# second ticker in silver and gold.
SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9.\-:]{0,19}\Z")
SOURCES = ("finnhub", "simulated", "replay")
# An id, not free text: a lone UTF-16 surrogate escape ("\ud800") is valid JSON to Python but makes
# DuckDB refuse the whole minute's file, and control characters have no business in an id.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._\-]{1,64}\Z")
MAX_RECORD_BYTES = 4096
# How much later than fetched_at Finnhub's quote time may be (two clocks that should agree).
CLOCK_TOLERANCE_MS = 300_000

# Plausibility bounds: no accepted record can make an aggregate infinite or undefined. A price is within
# [MIN_PRICE, MAX_PRICE] (a sub-penny stock to ten times Berkshire's A share), so a log return is within
# +-ln(MAX_PRICE / MIN_PRICE) ~ 25 and a sum of a billion prices stays finite. The change fields are
# bounded by what two such prices can differ by. Times are within [2000-01-01, 2100-01-01),
# which every warehouse's timestamp type holds.
MIN_PRICE = 0.0001
MAX_PRICE = 10_000_000.0
MAX_CHANGE = MAX_PRICE
MAX_CHANGE_PCT = 100 * MAX_PRICE / MIN_PRICE  # 1e13: from the lowest price to the highest
MIN_EPOCH_S = 946_684_800  # 2000-01-01T00:00:00Z
MAX_EPOCH_S = 4_102_444_800  # 2100-01-01T00:00:00Z
MIN_EPOCH_MS = MIN_EPOCH_S * 1000
MAX_EPOCH_MS = MAX_EPOCH_S * 1000


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
    # The common case first: every value an int or a float (exact types, so not bool) within its bounds.
    # That is all _number asks too (a float between finite bounds is finite, an int between them fits 64
    # bits), so this returns exactly for the quotes the detailed checks below would pass; they only run
    # to name what is wrong.
    try:
        c, d, dp, h, l, o, pc, t = _finnhub_values(quote)  # noqa: E741
    except KeyError:
        pass
    else:
        if (
            type(c) in _NUMBER_TYPES
            and type(d) in _NUMBER_TYPES
            and type(dp) in _NUMBER_TYPES
            and type(h) in _NUMBER_TYPES
            and type(l) in _NUMBER_TYPES
            and type(o) in _NUMBER_TYPES
            and type(pc) in _NUMBER_TYPES
            and MIN_PRICE <= l <= h <= MAX_PRICE
            and MIN_PRICE <= c <= MAX_PRICE
            and MIN_PRICE <= o <= MAX_PRICE
            and MIN_PRICE <= pc <= MAX_PRICE
            and -MAX_CHANGE <= d <= MAX_CHANGE
            and -MAX_CHANGE_PCT <= dp <= MAX_CHANGE_PCT
            and type(t) is int
            and MIN_EPOCH_S <= t < MAX_EPOCH_S
        ):
            return
    try:
        c, d, dp, h, l, o, pc, t = [_number(quote, f) for f in FINNHUB_FIELDS]  # noqa: E741
    except (KeyError, InvalidQuote) as exc:
        if all(_is_zero_or_null(quote.get(f)) for f in FINNHUB_FIELDS) and any(
            f in quote for f in PRICE_FIELDS
        ):
            raise InvalidQuote("all-zero quote (Finnhub's answer for an unknown symbol)") from None
        missing = [f for f in FINNHUB_FIELDS if quote.get(f) is None]
        if missing:
            raise InvalidQuote(f"missing field(s): {', '.join(missing)}") from None
        raise exc
    # Every value is a finite number within 64 bits here, so a bound above failed: name it.
    if not (c or d or dp or h or l or o or pc or t):
        raise InvalidQuote("all-zero quote (Finnhub's answer for an unknown symbol)")
    for f, v in zip(PRICE_FIELDS, (c, h, l, o, pc), strict=True):
        if v <= 0:
            raise InvalidQuote(f"price field {f!r} must be positive, got {float(v)!r}")
        if not MIN_PRICE <= v <= MAX_PRICE:
            raise InvalidQuote(f"price field {f!r} is outside [{MIN_PRICE:g}, {MAX_PRICE:g}]: {float(v)!r}")
    if h < l:
        raise InvalidQuote(f"high {float(h)} is below low {float(l)}")
    if not -MAX_CHANGE <= d <= MAX_CHANGE:
        raise InvalidQuote(f"field 'd' is outside [-{MAX_CHANGE:g}, {MAX_CHANGE:g}]")
    if not -MAX_CHANGE_PCT <= dp <= MAX_CHANGE_PCT:
        raise InvalidQuote(f"field 'dp' is outside [-{MAX_CHANGE_PCT:g}, {MAX_CHANGE_PCT:g}]")
    if type(t) is not int:
        raise InvalidQuote(f"quote time 't' must be an integer (epoch seconds), got {t!r}")
    raise InvalidQuote(f"quote time 't' must be epoch seconds in [{MIN_EPOCH_S}, {MAX_EPOCH_S}), got {t!r}")


_NUMBER_TYPES = frozenset((int, float))
_finnhub_values = operator.itemgetter(*FINNHUB_FIELDS)


def _is_zero_or_null(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and value == 0)


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise InvalidQuote unless ``record`` is a complete, well-typed, plausible quote record."""
    if type(record) is not dict and not isinstance(record, Mapping):  # an ABC check costs more
        raise InvalidQuote(f"record must be a JSON object, got {type(record).__name__}")
    if record.keys() != _RECORD_FIELD_SET:
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise InvalidQuote(f"missing field(s): {', '.join(missing)}")
        extra = sorted(map(str, set(record) - _RECORD_FIELD_SET))
        raise InvalidQuote(f"unexpected field(s): {', '.join(extra)[:200]}")
    version = record["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidQuote(f"unsupported schema_version {short_repr(version)}")
    symbol = record["symbol"]
    if type(symbol) is not str or (
        symbol not in _KNOWN_SYMBOLS and not _remember_match(SYMBOL_PATTERN, symbol, _KNOWN_SYMBOLS)
    ):
        raise InvalidQuote(
            f"symbol {short_repr(symbol)} is not a ticker (A-Z, 0-9, '.', '-', ':', at most 20, nothing else)"
        )
    validate_finnhub_quote(record)
    for f in ("fetched_at", "seq"):
        value = record[f]
        if type(value) is not int or not 0 <= value < _INT_LIMIT:
            shown = repr(value) if type(value) is not int or value < _INT_LIMIT else "beyond 64 bits"
            raise InvalidQuote(f"field {f!r} must be a non-negative integer, got {shown[:40]}")
    fetched_at = record["fetched_at"]
    if not MIN_EPOCH_MS <= fetched_at < MAX_EPOCH_MS:
        raise InvalidQuote(
            f"field 'fetched_at' must be epoch milliseconds in [{MIN_EPOCH_MS}, {MAX_EPOCH_MS})"
        )
    # Finnhub's t is the last trade, so it may be days old (a weekend, a halted symbol, a replay) but
    # never later than the fetch that returned it.
    if record["t"] * 1000 > fetched_at + CLOCK_TOLERANCE_MS:
        raise InvalidQuote(f"quote time 't' is more than {CLOCK_TOLERANCE_MS // 1000} s after fetched_at")
    source = record["source"]
    if type(source) is not str or source not in _SOURCE_SET:
        raise InvalidQuote(f"field 'source' must be one of {', '.join(SOURCES)}")
    run_id = record["producer_run_id"]
    if type(run_id) is not str or (
        run_id not in _KNOWN_RUN_IDS and not _remember_match(RUN_ID_PATTERN, run_id, _KNOWN_RUN_IDS)
    ):
        raise InvalidQuote(
            "field 'producer_run_id' must be a non-empty string of A-Z, a-z, 0-9, '.', '_', '-' (at most 64)"
        )


# Strings a pattern accepted, remembered: a feed repeats a few thousand symbols and one run id per
# producer run, and a set lookup costs a fraction of a regex match. Exact (the same string gets the same
# answer); bounded, so a stream of distinct strings cannot grow it without limit.
_KNOWN_SYMBOLS: set[str] = set()
_KNOWN_RUN_IDS: set[str] = set()
_KNOWN_LIMIT = 100_000


def _remember_match(pattern: re.Pattern[str], text: str, known: set[str]) -> bool:
    if pattern.match(text) is None:
        return False
    if len(known) >= _KNOWN_LIMIT:
        known.clear()
    known.add(text)
    return True


def short_repr(value: Any) -> str:
    """A value for a reason: short, whatever it is (a reason must never be megabytes of payload), and
    never raising (repr of deep nesting or a huge integer can)."""
    try:
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    except Exception:  # noqa: BLE001 - RecursionError on deep nesting, and whatever a repr may raise
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Compact JSON, the wire form of a record."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode()


def decode_record(value: bytes | None) -> dict[str, Any]:
    """Parse and validate one Kafka message value; raise InvalidQuote with the reason if it is bad.

    Whatever the input, this returns a record or raises InvalidQuote, never anything else (fuzzed in
    stock_platform_tests/test_quotes.py): one record the decoder cannot handle must not fail a minute.
    """
    record = _decode_fast(value)
    if record is not None:
        return record
    try:
        return _decode_record(value)
    except InvalidQuote:
        raise
    except Exception as exc:  # deep nesting (RecursionError), or anything a future rule overlooks
        raise InvalidQuote(f"undecodable record ({type(exc).__name__})") from None


def _decode_fast(value: bytes | None) -> dict[str, Any] | None:
    """The record when orjson's parse of ``value`` passes every check, else None (the json path decides).

    orjson parses the records the producer writes ~3x faster than json. This path only ever accepts: a
    record it does not accept, for whatever reason, is decoded again by the json path from scratch, so
    every rejection and its reason come from that path alone. It is limited to ASCII text, where the two
    parsers agree on every object whose fields pass validate_record: that record is flat, its strings are
    confined to ASCII patterns and its numbers to bounds far inside 64 bits (orjson turns an integer
    beyond 64 bits into a float, which then fails a type or a bound; it refuses lone surrogates and values
    that overflow a double, which the json path then judges). Duplicate fields go to the json path too:
    the parsers need not keep the same one. stock_platform_tests/ingestion/test_quote_fast_path.py fuzzes
    the agreement.
    """
    if type(value) is not bytes or len(value) > MAX_RECORD_BYTES or not value.isascii():
        return None
    try:
        record = orjson.loads(value)
        if type(record) is not dict:
            return None
        validate_record(record)
        if _has_duplicate_fields(value, record):
            return None
    except Exception:  # noqa: BLE001 - any doubt: the json path decides, and says why
        return None
    return record


def _decode_record(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidQuote("empty message (tombstone)")
    if type(value) is not bytes:
        raise InvalidQuote(f"message value must be bytes, got {type(value).__name__}")
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
    if _has_duplicate_fields(value, record):
        # Python keeps a repeated field's last value and DuckDB its first (Snowflake's COPY refuses them,
        # ALLOW_DUPLICATE being false): the warehouse would not see the record that was validated.
        raise InvalidQuote("duplicate field(s)")
    return record


class _CheckedQuote(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A record's fields with the type and bound checks of validate_record that msgspec makes while it
    parses (in C): exact JSON types (an integer field refuses 1.0 and true; a float field takes an integer,
    as validate_record does), the bounds, every field present and no other. The checks across fields and
    the patterns are left to accepts_message."""

    schema_version: Literal[1]
    symbol: str
    c: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    d: Annotated[float, msgspec.Meta(ge=-MAX_CHANGE, le=MAX_CHANGE)]
    dp: Annotated[float, msgspec.Meta(ge=-MAX_CHANGE_PCT, le=MAX_CHANGE_PCT)]
    h: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    l: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]  # noqa: E741 - Finnhub's name
    o: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    pc: Annotated[float, msgspec.Meta(ge=MIN_PRICE, le=MAX_PRICE)]
    t: Annotated[int, msgspec.Meta(ge=MIN_EPOCH_S, lt=MAX_EPOCH_S)]
    fetched_at: Annotated[int, msgspec.Meta(ge=MIN_EPOCH_MS, lt=MAX_EPOCH_MS)]
    source: Literal["finnhub", "simulated", "replay"]
    producer_run_id: str
    seq: Annotated[int, msgspec.Meta(ge=0, le=_INT_LIMIT - 1)]


_CHECKED_QUOTE = msgspec.json.Decoder(_CheckedQuote)
_COLONS_OF_A_RECORD = len(RECORD_FIELDS)


def accepts_message(value: bytes | None, key: bytes | None) -> bool:
    """True only when decode_message accepts the message and its value is one line; False means: ask
    decode_message, which decides (and gives the reason).

    Ingestion's hot path: it needs the verdict, not the record (the value is embedded as is), and this
    gives it for the producer's records in a fraction of decode_message's time, parsing and checking types
    and bounds in C. It accepts only what is plain: ASCII without escapes or line breaks, and exactly one
    colon per field, so no field can appear twice (msgspec and json would keep different ones) and no
    string holds a colon. stock_platform_tests/ingestion/test_quote_fast_path.py fuzzes that it never
    accepts what decode_message refuses.
    """
    if (
        type(value) is not bytes
        or len(value) > MAX_RECORD_BYTES
        or value.count(b":") != _COLONS_OF_A_RECORD
        or not value.isascii()
        or b"\\" in value
        or b"\n" in value
        or b"\r" in value
    ):
        return False
    try:
        quote = _CHECKED_QUOTE.decode(value)
    except msgspec.DecodeError:
        return False
    symbol, run_id = quote.symbol, quote.producer_run_id
    return (
        quote.l <= quote.h
        and quote.t * 1000 <= quote.fetched_at + CLOCK_TOLERANCE_MS
        and key == symbol.encode()
        and (symbol in _KNOWN_SYMBOLS or _remember_match(SYMBOL_PATTERN, symbol, _KNOWN_SYMBOLS))
        and (run_id in _KNOWN_RUN_IDS or _remember_match(RUN_ID_PATTERN, run_id, _KNOWN_RUN_IDS))
    )


def decode_message(value: bytes | None, key: bytes | None) -> dict[str, Any]:
    """decode_record for a consumed Kafka message, which must also be keyed by its symbol.

    The producer keys each record by its symbol so that one symbol's quotes stay in one Kafka partition,
    in order. A record under another key (or none) came from something else writing to the topic: it is
    refused, since what it claims about its symbol cannot be trusted.
    """
    record = decode_record(value)
    if key != record["symbol"].encode():
        shown = "no key" if not key else f"key {short_repr(key)[1:]}"
        raise InvalidQuote(f"Kafka message has {shown}, not the record's symbol {record['symbol']!r}")
    return record


def _has_duplicate_fields(value: bytes, record: Mapping[str, Any]) -> bool:
    # Every field of a validated record is present, and each occurrence of a field in the text has its
    # own colon; so a text with one colon per field holds none twice. Nor does one whose only other colons
    # are the symbol's, when no escape can hide a colon. Only other texts pay for a parse of every pair.
    colons = value.count(b":")
    if colons == len(RECORD_FIELDS):
        return False
    if b"\\" not in value and colons == len(RECORD_FIELDS) + record["symbol"].count(":"):
        return False
    pairs: list[list[tuple[str, Any]]] = []
    json.JSONDecoder(object_pairs_hook=pairs.append, parse_constant=_reject_constant).decode(value.decode())
    top = pairs[-1]  # the outermost object closes last
    return len(top) != len({k for k, _ in top})


def _reject_constant(name: str) -> float:
    raise InvalidQuote(f"non-JSON number {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
