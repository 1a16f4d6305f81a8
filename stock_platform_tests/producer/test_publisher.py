from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from stock_platform.producer.publisher import QuotePublisher, build_record, producer_config, record_template
from stock_platform.producer.sources import SimulatedSource
from stock_platform.quotes import encode_record
from stock_platform.services.process import free_port

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    symbol=st.from_regex(r"\A[A-Z0-9][A-Z0-9.\-:]{0,19}\Z"),
    prices=st.tuples(finite, finite, finite, finite, finite, finite, finite),
    t=st.integers(0, 2**40),
    fetched_at=st.integers(0, 2**50),
    seq=st.integers(0, 2**62),
    run_id=st.text(min_size=1, max_size=40),
)
def test_the_fast_template_writes_exactly_what_encode_record_writes(
    symbol, prices, t, fetched_at, seq, run_id
):
    candidate = (symbol, *prices, t, fetched_at)
    key, template = record_template(symbol, "simulated", run_id)
    assert key == symbol.encode()
    expected = encode_record(build_record(candidate, "simulated", run_id, seq))
    assert (template % (*candidate[1:], seq)).encode() == expected


def test_the_producer_is_idempotent_and_bounded():
    config = producer_config("127.0.0.1:1", queue_max_messages=500)
    assert (config["enable.idempotence"], config["acks"]) == (True, "all")
    assert config["queue.buffering.max.messages"] == 500
    assert config["compression.type"] in ("lz4", "zstd")


def unreachable_publisher(queue_max_messages: int, message_timeout_ms: int) -> QuotePublisher:
    return QuotePublisher(
        bootstrap_servers=f"127.0.0.1:{free_port()}",  # nothing listens there
        source="simulated",
        topic="t",
        queue_max_messages=queue_max_messages,
        message_timeout_ms=message_timeout_ms,
        config_overrides={"reconnect.backoff.max.ms": 200},
    )


def test_without_kafka_the_queue_stays_bounded_and_expired_quotes_count_as_failed():
    publisher = unreachable_publisher(queue_max_messages=20, message_timeout_ms=500)
    quotes = SimulatedSource(["AAPL", "MSFT"]).take(50, 1_764_316_800_000)
    stop = threading.Event()
    started = time.monotonic()

    assert publisher.publish(quotes, stop) == 50

    assert publisher.stats.backpressure_waits > 0  # it waited for room rather than buffering all 50
    assert publisher.flush(10) == 0
    assert (publisher.stats.produced, publisher.stats.failed, publisher.delivered) == (50, 50, 0)
    assert sorted(publisher.failed_seqs) == list(range(50))
    assert publisher.kafka_down_since is not None
    assert time.monotonic() - started < 15


def test_a_stop_while_kafka_is_away_ends_the_wait_without_queueing_more():
    publisher = unreachable_publisher(queue_max_messages=5, message_timeout_ms=60_000)
    stop = threading.Event()
    stop.set()
    quotes = SimulatedSource(["AAPL"]).take(20, 1_764_316_800_000)

    assert publisher.publish(quotes, stop) == 5
    assert len(publisher.producer) == 5
    assert publisher.stats.produced == 5
    publisher.producer.purge()
