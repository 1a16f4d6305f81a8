"""Finnhub behaviours, end to end: a local Finnhub stub → the producer CLI → a real broker.

Each test reads back what reached the main and the dead-letter topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from stock_platform.producer import cli
from stock_platform.quotes import decode_record
from stock_platform_tests.producer.finnhub_stub import GOOD_QUOTE, ZERO_QUOTE, FinnhubStub, Reply
from stock_platform_tests.producer.kafka_helpers import consume_all, values

pytestmark = pytest.mark.integration

API_KEY = "test-key-5b1d0c9e"  # a made-up key; the tests assert it never appears in any output


@pytest.fixture
def stub() -> Iterator[FinnhubStub]:
    server = FinnhubStub(token=API_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def topics() -> tuple[str, str]:
    name = f"quotes-{uuid.uuid4().hex[:8]}"
    return name, f"{name}-dlq"


def produce(
    kafka_broker: Any,
    stub: FinnhubStub,
    topics: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
    api_key: str = API_KEY,
) -> tuple[int, dict[str, Any] | None, str]:
    monkeypatch.setenv("FINNHUB_API_KEY", api_key)
    code = cli.main([
        "--source", "finnhub", "--finnhub-url", stub.url, "--rate", "30",
        "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topics[0], "--dlq-topic", topics[1],
        "--connect-timeout", "20", "--flush-timeout", "20", *extra,
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert API_KEY not in out + err, "the API key leaked into the producer's output"
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else None
    return code, summary, err


def test_quotes_reach_the_main_topic_keyed_by_symbol(kafka_broker, stub, topics, capsys, monkeypatch):
    other = {
        **GOOD_QUOTE,
        "c": 420.5,
        "d": 2.5,
        "dp": 0.5981,
        "h": 421.0,
        "l": 417.0,
        "o": 418.0,
        "pc": 418.0,
    }
    stub.script("AAPL", Reply(body=GOOD_QUOTE))
    stub.script("MSFT", Reply(body=other))

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL,MSFT",
                               "--max-quotes", "2")  # fmt: skip

    assert code == 0
    assert summary is not None
    assert (summary["produced"], summary["delivered"], summary["rejected"], summary["failed"]) == (2, 2, 0, 0)
    messages = consume_all(kafka_broker.bootstrap_servers, topics[0])
    records = {m.key(): (m, decode_record(m.value())) for m in messages}
    assert sorted(records) == [b"AAPL", b"MSFT"]
    for symbol, expected in ((b"AAPL", GOOD_QUOTE), (b"MSFT", other)):
        msg, record = records[symbol]
        assert {f: record[f] for f in expected} == expected
        assert record["symbol"] == symbol.decode()
        # The producer created the topic with the broker's append time: the message's time is when the
        # broker appended it (a moment after the fetch), while fetched_at stays data in the record.
        kind, appended_at = msg.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert -1_000 <= appended_at - record["fetched_at"] < 60_000  # one host, one wall clock
        assert record["source"] == "finnhub"
        assert record["producer_run_id"] == summary["producer_run_id"]
    assert sorted(r["seq"] for _, r in records.values()) == [0, 1]
    assert consume_all(kafka_broker.bootstrap_servers, topics[1]) == []
    assert [r.token for r in stub.requests] == [API_KEY, API_KEY]


def test_429_waits_for_retry_after_then_retries(kafka_broker, stub, topics, capsys, monkeypatch):
    stub.script("AAPL", Reply(429, {"error": "API limit reached"}, headers={"Retry-After": "1"}), Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL",
                               "--max-quotes", "1")  # fmt: skip

    assert code == 0
    calls = stub.requests_for("AAPL")
    assert len(calls) == 2
    assert 1.0 <= calls[1].at - calls[0].at < 3.0
    assert summary is not None and summary["rate_limited"] == 1
    assert [m.key() for m in consume_all(kafka_broker.bootstrap_servers, topics[0])] == [b"AAPL"]
    assert consume_all(kafka_broker.bootstrap_servers, topics[1]) == []


def test_429_without_retry_after_backs_off(kafka_broker, stub, topics, capsys, monkeypatch):
    stub.script("AAPL", Reply(429, {"error": "API limit reached"}), Reply(429, {"error": "x"}), Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL",
                               "--max-quotes", "1", "--backoff-base", "0.05")  # fmt: skip

    assert code == 0
    assert len(stub.requests_for("AAPL")) == 3
    assert summary is not None and summary["rate_limited"] == 2
    assert len(consume_all(kafka_broker.bootstrap_servers, topics[0])) == 1


def test_5xx_is_retried_with_backoff(kafka_broker, stub, topics, capsys, monkeypatch):
    stub.script("AAPL", Reply(500, {"error": "boom"}), Reply(503, "unavailable", "text/plain"), Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL",
                               "--max-quotes", "1", "--backoff-base", "0.01")  # fmt: skip

    assert code == 0
    assert len(stub.requests_for("AAPL")) == 3
    assert summary is not None and (summary["retries"], summary["produced"]) == (2, 1)
    assert [
        decode_record(m.value())["c"] for m in consume_all(kafka_broker.bootstrap_servers, topics[0])
    ] == [GOOD_QUOTE["c"]]
    assert consume_all(kafka_broker.bootstrap_servers, topics[1]) == []


def test_persistent_5xx_gives_up_on_the_symbol_and_moves_on(kafka_broker, stub, topics, capsys, monkeypatch):
    stub.script("AAPL", Reply(500, {"error": "boom"}))
    stub.script("MSFT", Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL,MSFT",
                               "--max-quotes", "1", "--max-attempts", "2", "--backoff-base", "0.01")  # fmt: skip

    assert code == 0
    assert len(stub.requests_for("AAPL")) == 2
    assert summary is not None and summary["gave_up"] == 1
    assert [m.key() for m in consume_all(kafka_broker.bootstrap_servers, topics[0])] == [b"MSFT"]
    assert consume_all(kafka_broker.bootstrap_servers, topics[1]) == []


def test_401_stops_with_an_error_naming_the_variable(kafka_broker, stub, topics, capsys, monkeypatch):
    code, summary, err = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL",
                                 "--max-quotes", "3", api_key="wrong-key-9f2e")  # fmt: skip

    assert code == 2
    assert "FINNHUB_API_KEY" in err
    assert "wrong-key-9f2e" not in err
    assert len(stub.requests) == 1
    assert summary is not None and summary["produced"] == 0
    assert consume_all(kafka_broker.bootstrap_servers, topics[0]) == []
    assert consume_all(kafka_broker.bootstrap_servers, topics[1]) == []


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_non_json_body_goes_to_the_dead_letter_topic(
    kafka_broker, stub, topics, capsys, monkeypatch, content_type
):
    stub.script("AAPL", Reply(body="<html>upstream gateway error</html>", content_type=content_type))
    stub.script("MSFT", Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "AAPL,MSFT",
                               "--max-quotes", "2")  # fmt: skip

    assert code == 0
    assert summary is not None and (summary["produced"], summary["rejected"]) == (1, 1)
    assert [m.key() for m in consume_all(kafka_broker.bootstrap_servers, topics[0])] == [b"MSFT"]
    dead = consume_all(kafka_broker.bootstrap_servers, topics[1])
    [letter] = values(dead)
    assert dead[0].key() == b"AAPL"
    assert letter["reason"].startswith("not JSON")
    assert (letter["symbol"], letter["source"], letter["payload"]) == (
        "AAPL",
        "finnhub",
        "<html>upstream gateway error</html>",
    )
    assert isinstance(letter["rejected_at"], int)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ZERO_QUOTE, "all-zero quote (Finnhub's answer for an unknown symbol)"),
        # What Finnhub actually sends for an unknown ticker: zeros, with null change fields.
        ({**ZERO_QUOTE, "d": None, "dp": None}, "all-zero quote (Finnhub's answer for an unknown symbol)"),
        ({"c": 12.5}, "missing field(s): d, dp, h, l, o, pc, t"),
    ],
    ids=["all-zero", "zero-with-nulls", "missing-fields"],
)
def test_unusable_quotes_go_to_the_dead_letter_topic(
    kafka_broker, stub, topics, capsys, monkeypatch, body, reason
):
    stub.script("ZZZZ", Reply(body=body))
    stub.script("AAPL", Reply())

    code, summary, _ = produce(kafka_broker, stub, topics, capsys, monkeypatch, "--symbols", "ZZZZ,AAPL",
                               "--max-quotes", "2")  # fmt: skip

    assert code == 0
    assert summary is not None and (summary["produced"], summary["rejected"]) == (1, 1)
    assert [m.key() for m in consume_all(kafka_broker.bootstrap_servers, topics[0])] == [b"AAPL"]
    [letter] = values(consume_all(kafka_broker.bootstrap_servers, topics[1]))
    assert (letter["reason"], letter["symbol"]) == (reason, "ZZZZ")
    assert json.loads(letter["payload"]) == body
