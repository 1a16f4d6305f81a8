"""The producer never dies on bad input and never loses a good line.

Whatever a replay line or a Finnhub reply holds, turning it into an item gives a candidate or a Rejection
with a short reason, never an exception; a candidate always becomes a record the contract accepts; and the
good lines around poison ones all reach the main topic while the poison ones reach the dead-letter topic.
"""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_platform.producer import cli, sources
from stock_platform.producer.limiter import TokenBucket
from stock_platform.producer.publisher import QuotePublisher, build_record
from stock_platform.producer.sources import (
    MAX_LINE_BYTES,
    MAX_PAYLOAD_CHARS,
    MAX_REASON_CHARS,
    MAX_SYMBOL_CHARS,
    FinnhubSource,
    Rejection,
    ReplaySource,
    _payload_text,
    quote_item,
    rejection,
)
from stock_platform.quotes import decode_record, encode_record, validate_record
from stock_platform.services.process import free_port
from stock_platform_tests.producer.finnhub_stub import FinnhubStub, Reply
from stock_platform_tests.producer.kafka_helpers import consume_all, values

FETCHED_AT = 1_764_316_860_000  # the producer's clock in these tests: a minute after GOOD's quote time
GOOD = {"symbol": "AAPL", "c": 261.74, "d": 1.55, "dp": 0.5957, "h": 263.31, "l": 260.68, "o": 261.07,
        "pc": 260.19, "t": 1764316800}  # fmt: skip
DEEP = "[" * 5000 + "]" * 5000  # nested past any recursion limit: RecursionError in json.loads and dumps


# ------------------------------------------------------------------------------------------- strategies

# Any JSON value, with integers of any size (past 64 bits and past float range) and non-finite floats.
numbers = (
    st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400), 2**1000])
    | st.floats(allow_nan=True, allow_infinity=True)
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@st.composite
def mutated_quotes(draw: st.DrawFn) -> dict[str, Any]:
    """GOOD with fields replaced by arbitrary JSON values (or values around the bounds), removed, or added."""
    quote: dict[str, Any] = dict(GOOD)
    for field in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=4, unique=True)):
        action = draw(st.sampled_from(["replace", "delete", "near", "symbol"]))
        if action == "delete":
            del quote[field]
        elif action == "near":
            quote[field] = draw(st.sampled_from([0, -1, 1, 0.5, 1e-4, 1e7, 1e7 + 1, 2**63, 1e308, 946_684_800,
                                                 4_102_444_800, 1764316800.5, True, "261.74", None]))  # fmt: skip
        elif action == "symbol":
            quote["symbol"] = draw(
                st.sampled_from(["AAPL\n", " AAPL", "aapl", "", "A" * 21, "BRK.B", "AAPL\u0000"])
            )
        else:
            quote[field] = draw(json_values)
    for _ in range(draw(st.integers(0, 2))):
        quote[draw(st.text(max_size=6))] = draw(json_values)
    return quote


def dumps(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity as Python writes them: not JSON, but what a file may hold


lines_as_text = (
    st.text()
    | json_values.map(dumps)
    | mutated_quotes().map(dumps)
    | st.sampled_from([DEEP, '{"symbol": "AAPL", "c": ' + "1" * 5000 + "}", "{" * 3000, '"' + "x" * 10_000])
)
lines_as_bytes = st.binary() | lines_as_text.map(lambda s: s.encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------------------------------- properties


def assert_candidate_or_rejection(item: Any) -> None:
    if isinstance(item, Rejection):
        assert isinstance(item.reason, str) and 0 < len(item.reason) <= MAX_REASON_CHARS
        assert "\n" not in item.reason and "\r" not in item.reason  # one log line
        assert isinstance(item.payload, str) and len(item.payload) <= MAX_PAYLOAD_CHARS
        if item.symbol is not None:
            assert len(item.symbol) <= MAX_SYMBOL_CHARS
            item.symbol.encode()  # usable as a Kafka key
        return
    assert isinstance(item, tuple)
    # A candidate is always a record the contract accepts, once the publisher builds it.
    record = build_record(item, "replay", "run-1", 7)
    validate_record(record)
    assert decode_record(encode_record(record)) == record


def replay_item(line: str | bytes) -> Any:
    item, _ = ReplaySource(Path("unused.jsonl"))._item(line, FETCHED_AT)
    assert_candidate_or_rejection(item)
    return item


@given(lines_as_text)
def test_any_text_line_becomes_a_candidate_or_a_rejection(line):
    replay_item(line)


@given(lines_as_bytes)
def test_any_bytes_line_becomes_a_candidate_or_a_rejection(line):
    replay_item(line)


@given(mutated_quotes())
def test_any_mutation_of_a_good_quote_becomes_a_candidate_or_a_rejection(quote):
    item = replay_item(json.dumps(quote))
    if quote == GOOD:
        assert not isinstance(item, Rejection)


@given(json_values | mutated_quotes(), st.sampled_from([FETCHED_AT, 0, -1, 2**70]))
def test_quote_item_never_raises(quote, fetched_at):
    assert_candidate_or_rejection(quote_item(quote.get("symbol") if isinstance(quote, dict) else quote,
                                             quote, fetched_at))  # fmt: skip


@pytest.fixture(scope="module")
def finnhub_source() -> Iterator[FinnhubSource]:
    source = FinnhubSource(
        api_key="fuzz-key",
        symbols=["AAPL"],
        limiter=TokenBucket(1e9, capacity=1e9),
        base_url=f"http://127.0.0.1:{free_port()}/api/v1",  # never called: the client's quote is replaced
        max_attempts=1,
        clock_ms=lambda: FETCHED_AT,
    )
    yield source
    source.client.close()


def finnhub_item(source: FinnhubSource, symbol: str, reply: Any) -> Any:
    """The item fetch() makes of ``reply``: a value the client returned, or an exception it raised."""

    def quote(_symbol: str) -> Any:
        if isinstance(reply, BaseException):
            raise reply
        return reply

    source.client.quote = quote
    item = source.fetch(symbol, threading.Event())
    assert item is not None
    assert_candidate_or_rejection(item)
    return item


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["AAPL", "MSFT", "AAPL\n", "BAD SYMBOL", "A" * 30]),
    json_values | mutated_quotes() | st.text(),
)
def test_any_finnhub_reply_becomes_a_candidate_or_a_rejection(finnhub_source, symbol, reply):
    finnhub_item(finnhub_source, symbol, reply)


@pytest.mark.parametrize(
    "error",
    [RecursionError("maximum recursion depth exceeded"), TypeError("argument of type 'int' is not iterable"),
     ValueError("Exceeds the limit (4300 digits) for integer string conversion"), KeyError("error")],
    ids=["recursion", "type", "value", "key"],
)  # fmt: skip
def test_a_client_failing_on_a_reply_gives_a_rejection_not_a_crash(finnhub_source, error):
    item = finnhub_item(finnhub_source, "AAPL", error)
    assert isinstance(item, Rejection)
    assert item.reason.startswith("unusable reply from Finnhub: ")
    assert item.symbol == "AAPL"


def test_the_good_finnhub_reply_is_a_candidate(finnhub_source):
    item = finnhub_item(finnhub_source, "AAPL", {k: v for k, v in GOOD.items() if k != "symbol"})
    assert item == ("AAPL", 261.74, 1.55, 0.5957, 263.31, 260.68, 261.07, 260.19, 1764316800, FETCHED_AT)


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    "payload",
    [deeply_nested(100_000), 10**5000, {(1, 2): "tuple key"}, Unprintable(), [Unprintable()], "x" * 10**6,
     {"a": float("nan")}],
    ids=["deep", "huge-int", "tuple-key", "unprintable", "unprintable-inside", "huge-text", "nan"],
)  # fmt: skip
def test_payload_text_never_raises_and_is_bounded(payload):
    text = _payload_text(payload)
    assert isinstance(text, str) and len(text) <= MAX_PAYLOAD_CHARS


def test_rejections_are_bounded_and_their_symbol_is_a_usable_key():
    made = rejection("r" * 10**6, "\ud800" + "A" * 10**6, "p" * 10**6)
    assert len(made.reason) == MAX_REASON_CHARS and made.reason.endswith("...")
    assert len(made.payload) == MAX_PAYLOAD_CHARS
    assert made.symbol is not None and made.symbol.startswith("\\ud800AAA")
    made.symbol.encode()
    assert rejection("r", ["AAPL"], "p").symbol is None
    # A huge symbol or value shows up short in the reason.
    [item] = [replay_item(json.dumps({**GOOD, "symbol": "A" * 10**5}))]
    assert isinstance(item, Rejection) and len(item.reason) < 120


def test_the_publisher_queues_a_rejection_whatever_its_symbol():
    publisher = QuotePublisher(bootstrap_servers=f"127.0.0.1:{free_port()}", source="replay",
                               message_timeout_ms=1000)  # fmt: skip
    assert publisher.reject(Rejection("r", "A\ud800", "p"), threading.Event())
    assert publisher.stats.rejected == 1


@pytest.mark.parametrize("source", ["simulated", "finnhub"])
def test_symbols_the_contract_refuses_are_a_usage_error(capsys, monkeypatch, source):
    """Caught up front: the simulated source validates only a sample of its records, and Finnhub would be
    polled for quotes that could only ever go to the dead-letter topic."""
    monkeypatch.setenv("FINNHUB_API_KEY", "test-key")
    code = cli.main(
        ["--source", source, "--symbols", "AAPL,BAD SYMBOL,X_Y", "--bootstrap-servers", "127.0.0.1:1"]
    )
    assert code == 2
    assert "--symbols: 'BAD SYMBOL', 'X_Y' not ticker(s)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- replay files


def good_line(symbol: str, c: float) -> dict[str, Any]:
    return {**GOOD, "symbol": symbol, "c": c, "h": max(GOOD["h"], c), "l": min(GOOD["l"], c)}


GOOD_LINES = [good_line("AAPL", 261.74), good_line("MSFT", 420.5), good_line("BRK.B", 499.99),
              good_line("TSLA", 250.01), good_line("NVDA", 180.25)]  # fmt: skip
# Poison lines, each with the reason it must carry to the dead-letter topic (a prefix where the text
# comes from Python's own message) and the symbol the letter is keyed by.
POISON: list[tuple[bytes, str, str | None]] = [
    (DEEP.encode(), "unusable line: nested too deeply (RecursionError)", None),
    (('{"symbol": "AAPL", "c": ' + "[" * 5000 + "]" * 5000 + "}").encode(),
     "unusable line: nested too deeply (RecursionError)", None),
    (json.dumps(GOOD).encode().replace(b'"AAPL"', b'"AA\xffPL"'), "not UTF-8: invalid start byte at byte 14",
     None),
    (json.dumps(GOOD).replace("261.74", "1" * 5000).encode(),
     "unusable line: ValueError: Exceeds the limit (4300 digits) for integer string conversion", None),
    (json.dumps({**GOOD, "symbol": "AAPL\n"}).encode(), "symbol 'AAPL\\n' is not a ticker", "AAPL\n"),
    (json.dumps({**GOOD, "c": True}).encode(), "field 'c' must be a number, got bool", "AAPL"),
    (json.dumps({**GOOD, "t": 1764316800.5}).encode(),
     "quote time 't' must be an integer (epoch seconds), got 1764316800.5", "AAPL"),
    (json.dumps({**GOOD, "symbol": ["AAPL"]}).encode(), "symbol ['AAPL'] is not a ticker", None),
    (json.dumps({**GOOD, "c": 10**400}).encode(), "field 'c' is an integer outside the 64-bit range", "AAPL"),
    (json.dumps([GOOD]).encode(), "line must be a JSON object, got list", None),
    (b"{" + b" " * (MAX_LINE_BYTES + 10) + b"}", f"line of {MAX_LINE_BYTES + 13} bytes is longer than", None),
    (json.dumps({**GOOD, "c": float("nan")}).encode(), "field 'c' is not finite: nan", "AAPL"),
]  # fmt: skip


def replay_file(path: Path) -> list[bytes]:
    """Good lines with poison lines around and between them; returns the lines as written."""
    lines: list[bytes] = []
    poison = [line for line, _, _ in POISON]
    for i, good in enumerate(GOOD_LINES):
        lines += poison[i :: len(GOOD_LINES)]
        lines.append(json.dumps(good).encode())
    lines += [b"", b"   "]  # blank lines are skipped, not rejected
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_good_lines_around_poison_are_all_yielded(tmp_path, batch_size):
    path = tmp_path / "mixed.jsonl"
    replay_file(path)
    source = ReplaySource(path, pace="fast", clock_ms=lambda: FETCHED_AT, batch_size=batch_size)
    items = [item for batch in source.batches(threading.Event()) for item in batch]
    candidates = [i for i in items if not isinstance(i, Rejection)]
    assert [(c[0], c[1]) for c in candidates] == [(g["symbol"], g["c"]) for g in GOOD_LINES]
    assert len(items) == len(GOOD_LINES) + len(POISON) == source.stats["lines"]
    for item in items:
        assert_candidate_or_rejection(item)


def test_original_pace_also_keeps_every_good_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    replay_file(path)
    source = ReplaySource(path, pace="original", clock_ms=lambda: FETCHED_AT)
    items = [item for batch in source.batches(threading.Event()) for item in batch]
    assert [i[0] for i in items if not isinstance(i, Rejection)] == [g["symbol"] for g in GOOD_LINES]
    assert len(items) == len(GOOD_LINES) + len(POISON)


def test_a_read_error_still_yields_the_good_lines_read_before_it(tmp_path, monkeypatch):
    path = tmp_path / "quotes.jsonl"
    path.write_text("")
    good = [json.dumps(g).encode() for g in GOOD_LINES[:3]]

    def failing_disk(_file: Any) -> Iterator[bytes]:
        yield from good
        raise OSError("Input/output error")

    monkeypatch.setattr(sources, "_read_lines", failing_disk)
    source = ReplaySource(path, pace="fast", clock_ms=lambda: FETCHED_AT)
    yielded: list[Any] = []
    with pytest.raises(OSError, match="Input/output error"):
        for batch in source.batches(threading.Event()):
            yielded += batch
    assert [i[0] for i in yielded] == ["AAPL", "MSFT", "BRK.B"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([json.dumps(g).encode() for g in GOOD_LINES]) | lines_as_bytes, max_size=12),
       st.integers(1, 5))  # fmt: skip
def test_batching_yields_exactly_the_items_of_the_lines_in_order(lines, batch_size):
    data = b"\n".join(lines) + b"\n"
    expected_lines = [part.strip() for part in data.split(b"\n") if part.strip()]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lines.jsonl"
        path.write_bytes(data)
        source = ReplaySource(path, pace="fast", clock_ms=lambda: FETCHED_AT, batch_size=batch_size)
        items = [item for batch in source.batches(threading.Event()) for item in batch]
    assert items == [replay_item(line) for line in expected_lines]


# ------------------------------------------------------------------------------------------- to Kafka


@pytest.mark.integration
def test_a_replay_of_good_and_poison_lines_publishes_exactly_the_good_ones(kafka_broker, tmp_path, capsys,
                                                                            monkeypatch):  # fmt: skip
    monkeypatch.delenv("FINNHUB_API_KEY", raising=False)
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "mixed.jsonl"
    written = replay_file(path)

    code = cli.main(["--source", "replay", "--replay-file", str(path), "--pace", "fast",
                     "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                     "--dlq-topic", f"{topic}-dlq"])  # fmt: skip

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["produced"], summary["delivered"], summary["rejected"]) == (5, 5, len(POISON))
    assert summary["lines"] == len(GOOD_LINES) + len(POISON)
    assert (summary["failed"], summary["dlq_failed"], summary["undelivered"]) == (0, 0, 0)

    messages = consume_all(kafka_broker.bootstrap_servers, topic)
    records = sorted((decode_record(m.value()) for m in messages), key=lambda r: r["seq"])
    assert [{k: r[k] for k in GOOD} for r in records] == GOOD_LINES  # every good line, once, in order
    assert {r["source"] for r in records} == {"replay"}
    assert [m.key() for m in sorted(messages, key=lambda m: decode_record(m.value())["seq"])] == [
        g["symbol"].encode() for g in GOOD_LINES
    ]
    assert {m.timestamp()[0] for m in messages} == {TIMESTAMP_LOG_APPEND_TIME}

    letters = values(consume_all(kafka_broker.bootstrap_servers, f"{topic}-dlq"))
    assert len(letters) == len(POISON)
    unmatched = list(letters)
    for line, reason, symbol in POISON:
        [letter] = [d for d in unmatched if d["reason"].startswith(reason) and d["symbol"] == symbol
                    and line.decode("utf-8", "replace").startswith(d["payload"][:50])]  # fmt: skip
        unmatched.remove(letter)
        assert letter["source"] == "replay"
        assert len(letter["reason"]) <= MAX_REASON_CHARS
        assert len(letter["payload"]) <= MAX_PAYLOAD_CHARS
    assert unmatched == []
    assert written  # the file held blank lines too: they are neither published nor rejected


@pytest.mark.integration
def test_poison_finnhub_replies_are_rejected_and_polling_goes_on(kafka_broker, capsys, monkeypatch):
    api_key = "test-key-0d1f3a"
    stub = FinnhubStub(token=api_key).start()
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    try:
        stub.script("AAPL", Reply(body=DEEP))  # parses to RecursionError inside the client
        stub.script("MSFT", Reply(404, body="5"))  # an error body the client's exception cannot read
        stub.script("TSLA", Reply(body='{"c": ' + "1" * 5000 + "}"))  # ValueError: too many digits
        stub.script("NVDA", Reply(body={**{k: v for k, v in GOOD.items() if k != "symbol"}, "c": True}))
        stub.script("GOOGL", Reply(body={k: v for k, v in GOOD.items() if k != "symbol"}))
        monkeypatch.setenv("FINNHUB_API_KEY", api_key)
        code = cli.main(["--source", "finnhub", "--finnhub-url", stub.url, "--rate", "30",
                         "--symbols", "AAPL,MSFT,TSLA,NVDA,GOOGL", "--max-quotes", "5",
                         "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                         "--dlq-topic", f"{topic}-dlq", "--max-attempts", "1"])  # fmt: skip
    finally:
        stub.stop()

    out, err = capsys.readouterr()
    assert code == 0, err
    assert api_key not in out + err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["produced"], summary["rejected"]) == (1, 4)
    assert [m.key() for m in consume_all(kafka_broker.bootstrap_servers, topic)] == [b"GOOGL"]
    letters = {d["symbol"]: d for d in values(consume_all(kafka_broker.bootstrap_servers, f"{topic}-dlq"))}
    assert letters["AAPL"]["reason"] == "unusable reply from Finnhub: nested too deeply (RecursionError)"
    assert letters["AAPL"]["payload"] == DEEP[:MAX_PAYLOAD_CHARS]
    assert letters["MSFT"]["reason"].startswith("HTTP 404: unreadable error body (TypeError")
    assert letters["MSFT"]["payload"] == "5"
    assert letters["TSLA"]["reason"].startswith("unusable reply from Finnhub: ValueError: Exceeds the limit")
    assert letters["NVDA"]["reason"] == "field 'c' must be a number, got bool"
    assert all(len(d["reason"]) <= MAX_REASON_CHARS for d in letters.values())
