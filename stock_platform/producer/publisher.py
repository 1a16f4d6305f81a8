"""The Kafka side of the producer: the idempotent producer, records and dead letters.

Topics are created by stock_platform.kafka_topic (the quote topic with the broker's append time).

Memory stays bounded when Kafka is slow or away: librdkafka's queue is capped, and a full queue
(BufferError) makes the caller wait, which in turn stops the source from fetching more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stock_platform.producer.sources import Candidate, Item, Rejection, now_ms
from stock_platform.quotes import (
    FINNHUB_FIELDS,
    SCHEMA_VERSION,
    InvalidQuote,
    encode_record,
    validate_record,
)

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "stock-quotes"
DLQ_TOPIC = "stock-quotes-dlq"


class KafkaUnreachable(RuntimeError):
    """No broker answered; the message names the address and how to fix it."""


def producer_config(
    bootstrap_servers: str,
    queue_max_messages: int = 100_000,
    message_timeout_ms: int = 60_000,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "stock-platform-producer",
        # Idempotence: a retried batch is written once, in order, per partition.
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        # The bound on memory while Kafka is slow or away: beyond it produce() raises BufferError.
        "queue.buffering.max.messages": queue_max_messages,
        "queue.buffering.max.kbytes": 65_536,
        # A message still undelivered after this is reported as failed (and counted) instead of waiting forever.
        "message.timeout.ms": message_timeout_ms,
        # Successes need no callback: after a complete flush, delivered = produced - failed.
        "delivery.report.only.error": True,
    }
    config.update(overrides or {})
    return config


def check_reachable(bootstrap_servers: str, timeout_s: float) -> AdminClient:
    """An admin client once a broker answers metadata; KafkaUnreachable after ``timeout_s``."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            if admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic()))).brokers:
                return admin
        except KafkaException as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = f" ({last.args[0].str()})" if last is not None and last.args else ""
            raise KafkaUnreachable(
                f"Kafka is unreachable at {bootstrap_servers}: no broker answered within {timeout_s:.0f} s"
                f"{detail}. Start it (stock-platform services up) or point --bootstrap-servers / "
                "KAFKA_BOOTSTRAP_SERVERS at a running broker."
            )


def record_template(symbol: str, source: str, run_id: str) -> tuple[bytes, str]:
    """The key and a %-template of the record's compact JSON, in ``encode_record``'s exact form.

    Formatting floats with ``%r`` gives ``repr(float)``, which is what ``json.dumps`` writes; the tests
    assert byte equality with ``encode_record`` for arbitrary values.
    """
    head = json.dumps({"schema_version": SCHEMA_VERSION, "symbol": symbol}, separators=(",", ":"))[:-1]
    fields = "".join(f',"{f}":%r' for f in FINNHUB_FIELDS[:-1])
    tail = json.dumps({"source": source, "producer_run_id": run_id}, separators=(",", ":"))[1:-1]
    template = (
        head.replace("%", "%%") + fields + ',"t":%d,"fetched_at":%d,' + tail.replace("%", "%%") + ',"seq":%d}'
    )
    return symbol.encode(), template


def build_record(candidate: Candidate, source: str, run_id: str, seq: int) -> dict[str, Any]:
    symbol, *values, fetched_at = candidate
    return {
        "schema_version": SCHEMA_VERSION,
        "symbol": symbol,
        **dict(zip(FINNHUB_FIELDS, values, strict=True)),
        "fetched_at": fetched_at,
        "source": source,
        "producer_run_id": run_id,
        "seq": seq,
    }


@dataclass
class PublisherStats:
    produced: int = 0  # records queued for the main topic (each has a seq)
    rejected: int = 0  # inputs queued for the dead-letter topic
    failed: int = 0  # main-topic records Kafka reported as undeliverable
    dlq_failed: int = 0
    backpressure_waits: int = 0  # times produce() found the queue full and had to wait
    pending: int = 0  # messages still in the client's queue at the last look


@dataclass
class QuotePublisher:
    """Turns source items into records on ``topic`` and rejections on ``dlq_topic``."""

    bootstrap_servers: str
    source: str
    topic: str = DEFAULT_TOPIC
    dlq_topic: str = DLQ_TOPIC
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    queue_max_messages: int = 100_000
    message_timeout_ms: int = 60_000
    config_overrides: Mapping[str, Any] | None = None
    # Sources that are valid by construction get one full validation per batch instead of per record.
    sample_validation: bool = False
    stats: PublisherStats = field(default_factory=PublisherStats)

    def __post_init__(self) -> None:
        config = producer_config(
            self.bootstrap_servers, self.queue_max_messages, self.message_timeout_ms, self.config_overrides
        )
        config["error_cb"] = self._on_error
        config["on_delivery"] = self._on_delivery
        # librdkafka's own log lines go through logging (structured), not raw to stderr.
        config.setdefault("logger", logging.getLogger("stock_platform.producer.librdkafka"))
        self.producer = Producer(config)
        self._templates: dict[str, tuple[bytes, str]] = {}
        self.kafka_down_since: float | None = None
        self._last_down_log = 0.0
        self.failed_seqs: list[int] = []
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------- callbacks

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            now = time.monotonic()
            if self.kafka_down_since is None:
                self.kafka_down_since = now
            if now - self._last_down_log > 30:
                self._last_down_log = now
                log.error(
                    "Kafka unreachable at %s (%s); %d message(s) waiting, new quotes wait for room",
                    self.bootstrap_servers, err.str(), len(self.producer),
                )  # fmt: skip
        else:
            log.error("Kafka client error: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        # Only failures arrive here (delivery.report.only.error).
        if err is None:
            return
        if msg.topic() == self.topic:
            self.stats.failed += 1
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.failed_seqs.append(json.loads(msg.value())["seq"])
        else:
            self.stats.dlq_failed += 1
        log.error("delivery to %s failed: %s", msg.topic(), err.str())

    # --------------------------------------------------------------------------------- produce

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, timestamp: int, stop: threading.Event
    ) -> bool:
        """Queue one message, waiting while the queue is full; False if ``stop`` was set while waiting."""
        while True:
            try:
                self.producer.produce(topic, value, key, timestamp=timestamp)
                return True
            except BufferError:
                self.stats.backpressure_waits += 1
                self.producer.poll(0.1)
                if stop.is_set():
                    return False

    def publish(self, items: Iterable[Item], stop: threading.Event) -> int:
        """Queue every item; return how many were queued (fewer only if stopped while Kafka was full)."""
        queued = 0
        validate_next = True
        for item in items:
            if isinstance(item, Rejection):
                if not self.reject(item, stop):
                    return queued
                queued += 1
                continue
            seq = self.stats.produced
            symbol = item[0]
            if self.sample_validation and not validate_next:
                cached = self._templates.get(symbol)
                if cached is None:
                    cached = self._templates[symbol] = record_template(symbol, self.source, self.run_id)
                key, template = cached
                value = (template % (*item[1:], seq)).encode()
            else:
                record = build_record(item, self.source, self.run_id, seq)
                try:
                    validate_record(record)
                except InvalidQuote as exc:
                    if not self.reject(Rejection(str(exc), symbol, json.dumps(record, default=repr)), stop):
                        return queued
                    queued += 1
                    continue
                key, value = symbol.encode(), encode_record(record)
                validate_next = False
            if not self._produce(self.topic, value, key, item[-1], stop):
                return queued
            self.stats.produced = seq + 1
            queued += 1
        self.producer.poll(0)
        return queued

    def reject(self, rejection: Rejection, stop: threading.Event) -> bool:
        rejected_at = now_ms()
        value = json.dumps({
            "reason": rejection.reason, "source": self.source, "symbol": rejection.symbol,
            "payload": rejection.payload, "rejected_at": rejected_at,
        }, separators=(",", ":")).encode()  # fmt: skip
        # Rejections from the sources carry encodable symbols; a lone surrogate must still not raise here.
        key = rejection.symbol.encode("utf-8", "backslashreplace") if rejection.symbol else None
        if not self._produce(self.dlq_topic, value, key, rejected_at, stop):
            return False
        self.stats.rejected += 1
        log.warning("rejected %s quote for %s: %s", self.source, rejection.symbol, rejection.reason)
        return True

    def poll(self) -> None:
        before = self.stats.pending
        self.producer.poll(0)
        self.stats.pending = len(self.producer)
        # The error callback says when the broker goes away; a draining queue says it is back.
        if self.kafka_down_since is not None and self.stats.pending < before:
            log.info("Kafka at %s reachable again", self.bootstrap_servers)
            self.kafka_down_since = None

    def flush(self, timeout_s: float) -> int:
        """Deliver what is queued; return how many messages are still undelivered after ``timeout_s``."""
        remaining = self.producer.flush(timeout_s)
        self.stats.pending = remaining
        return remaining

    @property
    def delivered(self) -> int:
        """Main-topic records known delivered: queued minus failed minus whatever may still be queued."""
        return max(0, self.stats.produced - self.stats.failed - self.stats.pending)
