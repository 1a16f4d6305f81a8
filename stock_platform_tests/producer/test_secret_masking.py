"""No form of the Finnhub key reaches a log line, an error message or the dead-letter topic.

Keys carry reserved and non-ASCII characters, so that each encoder (requests' ``quote_plus``, ``quote``,
JSON, ``repr``) writes them differently from how they were typed. The encoders below are this test's own,
written apart from stock_platform.masking, so that a form the module forgets shows up as a leak.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stock_platform.masking import Masker, masked_logging
from stock_platform.producer import cli
from stock_platform.producer.limiter import TokenBucket
from stock_platform.producer.sources import FinnhubSource, Rejection
from stock_platform.producer.status import JsonFormatter
from stock_platform.services.process import free_port
from stock_platform_tests.producer.finnhub_stub import FinnhubStub, Reply
from stock_platform_tests.producer.kafka_helpers import consume_all, values


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


ENCODERS: dict[str, Callable[[str], str]] = {
    "as typed": lambda k: k,
    "quote_plus (requests' query strings)": quote_plus,
    "quote_plus, lower-case hex": lambda k: _lower_hex(quote_plus(k)),
    "quote": lambda k: quote(k, safe=""),
    "quote, lower-case hex": lambda k: _lower_hex(quote(k, safe="")),
    "quote keeping /": quote,
    "quote_plus twice": lambda k: quote(quote_plus(k), safe=""),
    "JSON (ASCII)": lambda k: json.dumps(k)[1:-1],
    "JSON (UTF-8)": lambda k: json.dumps(k, ensure_ascii=False)[1:-1],
    "repr": lambda k: repr(k)[1:-1],
    "repr of the UTF-8 bytes": lambda k: repr(k.encode())[2:-1],
}

RESERVED = "/+=&?% #'\"\\:;@é€😀"
# A key with at least one character that some encoder rewrites; no lone surrogates (they cannot be sent).
KEYS = st.builds(
    lambda head, reserved, tail: head + reserved + tail,
    st.text(st.characters(codec="utf-8"), min_size=4, max_size=16),
    st.text(st.sampled_from(RESERVED), min_size=1, max_size=4),
    st.text(st.characters(codec="utf-8"), max_size=16),
)
# A real Finnhub key is 20 letters and digits; these are the kinds that break a mask of the typed form.
NASTY_KEY = "k3y/with+reserved=&chars?100% #é€"


def leaks(text: str, key: str) -> list[str]:
    """The encodings of ``key`` that appear in ``text``."""
    return [name for name, encode in ENCODERS.items() if encode(key) in text]


@given(key=KEYS, encoder=st.sampled_from(sorted(ENCODERS)))
def test_every_encoding_of_the_key_is_masked(key, encoder):
    around = "GET /api/v1/quote?symbol=AAPL&token={}: failed"
    assume(not leaks(around.format("***"), key))  # a key spelled by the surrounding text itself
    masked = Masker([key])(around.format(ENCODERS[encoder](key)))
    assert masked == around.format("***")


@given(key=KEYS)
def test_log_records_are_masked_in_message_arguments_exception_and_fields(key):
    assume(not leaks("retry *** failed ConnectionError Traceback", key))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"stock_platform.test_masking.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with masked_logging([key], logger.name):
            try:
                raise ConnectionError(f"Max retries exceeded with url: /quote?token={quote_plus(key)}")
            except ConnectionError:
                logger.error("retry %s failed", quote(key, safe=""), exc_info=True,
                             extra={"fields": {"url": f"/quote?token={_lower_hex(quote(key))}"}})  # fmt: skip
    finally:
        logger.removeHandler(handler)
    assert handler.filters == []  # the masking ends with the block
    line = json.loads(stream.getvalue())
    assert line["msg"] == "retry *** failed"
    assert line["url"] == "/quote?token=***"
    assert "ConnectionError" in line["exc"]
    assert leaks(stream.getvalue(), key) == []


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged, urllib3's request lines included, through a handler that exists before the
    masking starts (as the CLI's and pytest's do)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    levels = root.level, urllib3.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    urllib3.setLevel(logging.DEBUG)  # its debug lines show each request's URL, token included
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        urllib3.setLevel(levels[1])


def script_failures(stub: FinnhubStub, key: str) -> None:
    """Replies that make the producer retry, warn and reject, each echoing the key where it can."""
    # A 503 to retry after, then a quote whose headers urllib3 cannot parse: it warns with the URL.
    stub.script("AAPL", Reply(503, {"error": "busy"}),
                Reply(headers={"X-Broken": "1\r\nno colon on this line"}))  # fmt: skip
    # A gateway's 404 that echoes the request: the reason and the dead letter's payload carry it.
    echo = f"no route for /api/v1/quote?symbol=MSFT&token={quote_plus(key)}"
    stub.script("MSFT", Reply(404, {"error": echo, "request": {"token": key}}))


def finnhub_source(key: str, url: str, symbols: list[str]) -> FinnhubSource:
    return FinnhubSource(api_key=key, symbols=symbols, limiter=TokenBucket(1000.0, 10), base_url=url,
                         max_attempts=2, backoff_base=0.001, timeout=2.0)  # fmt: skip


@pytest.fixture(scope="module")
def stub() -> Iterator[FinnhubStub]:
    """One server for every example (stopping one takes half a second); each example sets its key."""
    server = FinnhubStub(token="").start()
    try:
        yield server
    finally:
        server.stop()


@settings(max_examples=15, deadline=None)
@given(key=KEYS)
def test_finnhub_retries_warnings_and_rejections_never_show_the_key(stub, key):
    assume(not leaks("finnhub AAPL failed (HTTP 503); retry 1 in 0.00 s token=*** ConnectionError", key))
    stub.token = key
    stub.requests.clear()
    script_failures(stub, key)
    with captured_logs() as logs, masked_logging([key]):
        source = finnhub_source(key, stub.url, ["AAPL", "MSFT"])
        items = [source.fetch(symbol, threading.Event()) for symbol in ("AAPL", "MSFT")]
        # Nothing listens on this port: requests' error names the URL, token included, in each retry line.
        unreachable = finnhub_source(key, f"http://127.0.0.1:{free_port()}/api/v1", ["AAPL"])
        assert unreachable.fetch("AAPL", threading.Event()) is None

    assert [r.token for r in stub.requests_for("AAPL")] == [key, key]  # the real key went out
    quote_item, rejected = items
    assert isinstance(quote_item, tuple) and quote_item[0] == "AAPL"
    assert isinstance(rejected, Rejection) and rejected.reason.startswith("HTTP 404: no route for")
    text = logs.getvalue()
    for expected in ("HTTP 503", "Failed to parse headers", "ConnectionError", "token=***"):
        assert expected in text, f"the scenario did not log {expected!r}:\n{text}"
    assert leaks(text, key) == [], text
    assert leaks(f"{rejected.reason} {rejected.payload}", key) == [], rejected
    assert leaks(repr(source), key) == []


@pytest.mark.integration
def test_the_producer_cli_shows_no_form_of_the_key(kafka_broker, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="urllib3")
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    stub = FinnhubStub(token=NASTY_KEY).start()
    try:
        script_failures(stub, NASTY_KEY)
        monkeypatch.setenv("FINNHUB_API_KEY", NASTY_KEY)
        code = cli.main(["--source", "finnhub", "--finnhub-url", stub.url, "--rate", "30",
                         "--symbols", "AAPL,MSFT", "--max-quotes", "2", "--backoff-base", "0.01",
                         "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                         "--dlq-topic", f"{topic}-dlq"])  # fmt: skip
    finally:
        stub.stop()

    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["produced"], summary["rejected"], summary["retries"]) == (1, 1, 1)
    assert "retry 1" in err and "Failed to parse headers" in caplog.text
    [letter] = values(consume_all(kafka_broker.bootstrap_servers, f"{topic}-dlq"))
    assert letter["reason"].startswith("HTTP 404: no route for /api/v1/quote?symbol=MSFT&token=***")
    for where, text in {"stdout": out, "stderr": err, "logs": caplog.text, "DLQ": json.dumps(letter)}.items():
        assert leaks(text, NASTY_KEY) == [], f"{where}: {text}"
