from __future__ import annotations

import email.utils
import json
import random
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stock_platform.producer.sources import Rejection, ReplaySource, backoff_seconds, retry_after_seconds

RECORD = {"schema_version": 1, "symbol": "AAPL", "c": 261.74, "d": 1.55, "dp": 0.5957, "h": 263.31,
          "l": 260.68, "o": 261.07, "pc": 260.19, "t": 1764316800, "fetched_at": 1764316800123,
          "source": "finnhub", "producer_run_id": "r1", "seq": 0}  # fmt: skip


def test_replay_keeps_recorded_fields_and_rejects_bad_lines(tmp_path):
    path = tmp_path / "quotes.jsonl"
    path.write_text("\n".join([
        json.dumps(RECORD), "", "{not json", json.dumps([1, 2]),
        json.dumps({**RECORD, "symbol": "bad symbol"}), json.dumps({**RECORD, "c": 0}),
    ]) + "\n")  # fmt: skip
    sent_at = 1764316900000  # the clock when replayed: a quote's t may not be later than its fetch
    source = ReplaySource(path, pace="fast", clock_ms=lambda: sent_at)
    items = [item for batch in source.batches(threading.Event()) for item in batch]
    assert items[0] == ("AAPL", 261.74, 1.55, 0.5957, 263.31, 260.68, 261.07, 260.19, 1764316800, sent_at)
    assert [(i.reason, i.symbol) for i in items[1:] if isinstance(i, Rejection)] == [
        ("not JSON: Expecting property name enclosed in double quotes at char 1", None),
        ("line must be a JSON object, got list", None),
        ("symbol 'bad symbol' is not a ticker", "bad symbol"),
        ("price field 'c' must be positive, got 0.0", "AAPL"),
    ]
    assert len(items) == 5
    assert source.stats["lines"] == 5


def test_replay_at_original_pace_keeps_the_recorded_spacing(tmp_path):
    path = tmp_path / "quotes.jsonl"
    lines = [{**RECORD, "fetched_at": RECORD["fetched_at"] + offset} for offset in (0, 300, 600)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    started = time.monotonic()
    batches = list(ReplaySource(path, pace="original").batches(threading.Event()))
    assert [len(b) for b in batches] == [1, 1, 1]
    assert time.monotonic() - started >= 0.6


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(header, expected):
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date():
    now = 1_764_316_800.0
    assert retry_after_seconds(email.utils.formatdate(now + 10, usegmt=True), now=now) == 10.0


@given(attempt=st.integers(0, 100), base=st.floats(0.001, 5), cap=st.floats(0.01, 120), seed=st.integers())
def test_backoff_is_jittered_within_the_exponential_bound(attempt, base, cap, seed):
    delay = backoff_seconds(attempt, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0**attempt)


def test_network_errors_are_retried_and_never_log_the_api_key(caplog):
    from stock_platform.producer.limiter import TokenBucket
    from stock_platform.producer.sources import FinnhubSource
    from stock_platform.services.process import free_port

    key = "secret-key-7c1f"
    source = FinnhubSource(
        api_key=key,
        symbols=["AAPL"],
        limiter=TokenBucket(100.0, 5),
        base_url=f"http://127.0.0.1:{free_port()}/api/v1",  # nothing listens there
        max_attempts=3,
        backoff_base=0.01,
        timeout=2.0,
    )
    with caplog.at_level("WARNING"):
        assert source.fetch("AAPL", threading.Event()) is None
    assert (source.stats["calls"], source.stats["retries"], source.stats["gave_up"]) == (3, 2, 1)
    assert "ConnectionError" in caplog.text
    assert key not in caplog.text
    assert "token=***" in caplog.text  # requests' message includes the URL; the key is masked
    assert key not in repr(source)
