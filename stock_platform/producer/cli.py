"""`stock-platform produce`: fetch quotes from a source and publish them to Kafka until told to stop.

Creates the quote topic with the broker's append time (or switches an existing one to it, with a warning)
and the dead-letter topic. Bad inputs go to the dead-letter topic with a reason; they never stop it.

Exit status: 0 when every accepted quote was delivered; 1 when Kafka is unreachable, refuses the topics, or
some quotes could not be delivered; 2 when the configuration is wrong (bad arguments, Finnhub refused the key).
The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from stock_platform.kafka_topic import APPEND_TIME, TIMESTAMP_TYPE
from stock_platform.masking import masked_logging
from stock_platform.producer.limiter import FINNHUB_MAX_CALLS_PER_SECOND, TokenBucket
from stock_platform.producer.publisher import KafkaUnreachable, QuotePublisher, check_reachable
from stock_platform.producer.sources import (
    DEFAULT_SYMBOLS,
    FinnhubAuthError,
    FinnhubSource,
    QuoteSource,
    ReplaySource,
    SimulatedSource,
    simulated_symbols,
)
from stock_platform.producer.status import StatusReporter, configure_logging
from stock_platform.producer.topic_cli import SWITCHED, ensure_topics, env_help, kafka_error, topic_settings
from stock_platform.quotes import SYMBOL_PATTERN
from stock_platform.settings import Settings, load_settings

log = logging.getLogger("stock_platform.producer")

SOURCES = ("finnhub", "simulated", "replay")
API_KEY_VAR = "FINNHUB_API_KEY"


class UsageError(ValueError):
    """Arguments that cannot work together; the message says which."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("source")
    src.add_argument(
        "--source",
        choices=SOURCES,
        default=None,
        help=f"finnhub (default when {API_KEY_VAR} is set), simulated (default otherwise) or replay",
    )
    src.add_argument(
        "--symbols", default=None, help=f"comma-separated tickers (default {','.join(DEFAULT_SYMBOLS)})"
    )
    src.add_argument(
        "--symbol-count",
        type=int,
        default=None,
        help="simulated: this many symbols (up to 10,000) instead of --symbols: ~100 well-known tickers "
        "starting near their usual prices, then made-up ticker-like names",
    )
    src.add_argument("--seed", type=int, default=0, help="simulated: seed of the price walk (default 0)")
    src.add_argument(
        "--rate",
        type=float,
        default=None,
        help="simulated: quotes/s in total (default one per symbol per second; 0 = unthrottled); "
        f"finnhub: calls/s budget (default 1, the free tier's 60/min; at most "
        f"{FINNHUB_MAX_CALLS_PER_SECOND:.0f})",
    )
    src.add_argument(
        "--burst", type=float, default=1.0, help="finnhub: calls allowed back to back (default 1)"
    )
    src.add_argument(
        "--finnhub-url",
        default=None,
        help=env_help("finnhub_api_url", "finnhub API base URL "),
    )
    src.add_argument(
        "--max-attempts",
        type=int,
        default=5,
        help="finnhub: tries per quote on 5xx/network errors before moving on (default 5)",
    )
    src.add_argument(
        "--backoff-base",
        type=float,
        default=1.0,
        help="finnhub: first backoff in seconds, doubled per retry, with jitter (default 1)",
    )
    src.add_argument(
        "--off-hours-interval",
        type=float,
        default=0.0,
        help="finnhub: outside NYSE regular hours, wait this many seconds between rounds "
        "(default 0: same pace around the clock)",
    )
    src.add_argument("--replay-file", type=Path, default=None, help="replay: JSONL file of recorded quotes")
    src.add_argument(
        "--pace",
        choices=("original", "fast"),
        default="fast",
        help="replay: keep the recorded spacing or send as fast as possible (default fast)",
    )

    kafka = parser.add_argument_group("kafka")
    kafka.add_argument("--bootstrap-servers", default=None, help=env_help("kafka_bootstrap_servers"))
    kafka.add_argument("--topic", default=None, help=env_help("kafka_topic"))
    kafka.add_argument("--dlq-topic", default=None, help=env_help("kafka_dlq_topic"))
    kafka.add_argument(
        "--partitions",
        type=int,
        default=None,
        help=env_help("kafka_topic_partitions", "partitions when creating the topic "),
    )
    kafka.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        help="replication factor when creating topics (default -1: the broker's default)",
    )
    kafka.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for Kafka at start-up (default 30)",
    )
    kafka.add_argument(
        "--flush-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for outstanding deliveries at exit (default 30)",
    )
    kafka.add_argument(
        "--message-timeout",
        type=float,
        default=60.0,
        help="seconds after which an undelivered message counts as failed (default 60)",
    )
    kafka.add_argument(
        "--queue-max-messages",
        type=int,
        default=100_000,
        help="messages buffered in memory before the producer waits for Kafka (default 100000)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--max-quotes", type=int, default=None, help="stop after this many quotes (published or rejected)"
    )
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument(
        "--log-interval",
        type=float,
        default=10.0,
        help="seconds between progress log lines when stderr is not a terminal (default 10)",
    )
    # fmt: skip


def _symbols(args: argparse.Namespace) -> list[str]:
    if args.symbol_count is not None:
        if args.symbols:
            raise UsageError("give either --symbols or --symbol-count, not both")
        return simulated_symbols(args.symbol_count, args.seed)
    if args.symbols:
        symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
        if not symbols:
            raise UsageError("--symbols is empty")
        # Every quote of a symbol the record contract refuses would go to the dead-letter topic.
        bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
        if bad:
            raise UsageError(f"--symbols: {', '.join(map(repr, bad[:5]))[:200]} not ticker(s) "
                             "(A-Z, 0-9, '.', '-', ':', at most 20 characters)")  # fmt: skip
        return symbols
    return list(DEFAULT_SYMBOLS)


def build_source(args: argparse.Namespace, settings: Settings) -> QuoteSource:
    api_key = settings.finnhub_api_key.get_secret_value() if settings.finnhub_api_key else ""
    source = args.source or ("finnhub" if api_key else "simulated")
    if source == "simulated":
        symbols = _symbols(args)
        rate = float(len(symbols)) if args.rate is None else args.rate
        return SimulatedSource(symbols, seed=args.seed, rate=rate)
    if source == "replay":
        if args.replay_file is None:
            raise UsageError("--source replay needs --replay-file")
        if not args.replay_file.is_file():
            raise UsageError(f"replay file {args.replay_file} does not exist")
        return ReplaySource(args.replay_file, pace=args.pace)
    if not api_key:
        raise UsageError(f"--source finnhub needs the {API_KEY_VAR} environment variable")
    if args.symbol_count is not None:
        raise UsageError("--symbol-count is for the simulated source; give --symbols for finnhub")
    rate = 1.0 if args.rate is None else args.rate
    if not 0 < rate <= FINNHUB_MAX_CALLS_PER_SECOND:
        raise UsageError(
            f"finnhub --rate must be in (0, {FINNHUB_MAX_CALLS_PER_SECOND:.0f}] calls/s, got {rate}"
        )
    return FinnhubSource(
        api_key=api_key,
        symbols=_symbols(args),
        limiter=TokenBucket(rate, capacity=max(1.0, args.burst)),
        base_url=args.finnhub_url or settings.finnhub_api_url,
        max_attempts=max(1, args.max_attempts),
        backoff_base=args.backoff_base,
        rng=random.Random(),
        off_hours_interval=args.off_hours_interval,
    )


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    handler = None
    if not logging.getLogger("stock_platform").handlers:
        handler = configure_logging(sys.stderr)
    try:
        # Every handler that can print a line of this run masks the key, in every encoding.
        with masked_logging([env.get(API_KEY_VAR, "")], "stock_platform"):
            return _run(args, env)
    finally:
        if handler is not None:
            logging.getLogger("stock_platform").removeHandler(handler)


def _run(args: argparse.Namespace, env: dict[str, str]) -> int:
    try:
        settings = load_settings(env)
        source = build_source(args, settings)
    except (UsageError, ValueError, FinnhubAuthError) as exc:
        log.error("%s", exc)
        return 2
    try:
        kafka = topic_settings(settings, args.bootstrap_servers, args.topic, args.dlq_topic, args.partitions)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    bootstrap, topic, args.dlq_topic, args.partitions = (
        kafka.bootstrap_servers, kafka.topic, kafka.dlq_topic, kafka.partitions
    )  # fmt: skip
    try:
        admin = check_reachable(bootstrap, args.connect_timeout)
        quote_topic, _ = ensure_topics(admin, topic, args.dlq_topic, args.partitions, args.replication_factor)
    except KafkaUnreachable as exc:
        log.error("%s", exc)
        return 1
    except KafkaException as exc:
        log.error("Kafka at %s refused to create or configure topic %s or %s: %s", bootstrap, topic,
                  args.dlq_topic, kafka_error(exc))  # fmt: skip
        return 1
    if quote_topic == SWITCHED:
        log.warning(
            "topic %s kept the producers' timestamps (CreateTime); switched it to %s=%s, so a record's minute "
            "is the minute the broker appended it (records appended before keep their old timestamps)",
            topic, TIMESTAMP_TYPE, APPEND_TIME,
        )  # fmt: skip
    publisher = QuotePublisher(
        bootstrap_servers=bootstrap,
        source=source.name,
        topic=topic,
        dlq_topic=args.dlq_topic,
        queue_max_messages=args.queue_max_messages,
        message_timeout_ms=int(args.message_timeout * 1000),
        sample_validation=source.trusted,
    )
    log.info("producing", extra={"fields": {
        "source": source.name, "topic": topic, "dlq_topic": args.dlq_topic, "bootstrap_servers": bootstrap,
        "producer_run_id": publisher.run_id,
    }})  # fmt: skip

    stop = threading.Event()
    previous = _install_signal_handlers(stop)
    timer = None
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    status = StatusReporter(sys.stderr, log_interval=args.log_interval)
    started = time.monotonic()
    handled = 0
    exit_code = 0
    batches = source.batches(stop)
    try:
        for batch in batches:
            if args.max_quotes is not None and handled + len(batch) > args.max_quotes:
                batch = batch[: args.max_quotes - handled]
            handled += publisher.publish(batch, stop)
            if status.due():
                publisher.poll()
                status.report(_snapshot(source, publisher))
            if stop.is_set() or (args.max_quotes is not None and handled >= args.max_quotes):
                break
    except FinnhubAuthError as exc:
        log.error("%s", exc)
        exit_code = 2
    finally:
        batches.close()
        if timer is not None:
            timer.cancel()
        status.close()
        remaining = publisher.flush(args.flush_timeout)
        _restore_signal_handlers(previous)

    elapsed = time.monotonic() - started
    stats = publisher.stats
    summary: dict[str, Any] = {
        "event": "summary",
        "source": source.name,
        "topic": topic,
        "producer_run_id": publisher.run_id,
        "produced": stats.produced,
        "delivered": publisher.delivered,
        "failed": stats.failed,
        "rejected": stats.rejected,
        "dlq_failed": stats.dlq_failed,
        "undelivered": remaining,
        "backpressure_waits": stats.backpressure_waits,
        "elapsed_s": round(elapsed, 3),
        "quotes_per_s": round(stats.produced / elapsed, 1) if elapsed > 0 else 0.0,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in source.stats.items()},
    }
    print(json.dumps(summary), flush=True)
    if remaining or stats.failed or stats.dlq_failed:
        log.error("%d message(s) were not delivered to Kafka at %s", remaining + stats.failed + stats.dlq_failed,
                  bootstrap)  # fmt: skip
        return exit_code or 1
    return exit_code


def _snapshot(source: QuoteSource, publisher: QuotePublisher) -> dict[str, Any]:
    stats = publisher.stats
    return {
        "source": source.name,
        "produced": stats.produced,
        "rejected": stats.rejected,
        "failed": stats.failed,
        "pending": stats.pending,
        "backpressure_waits": stats.backpressure_waits,
        "kafka_down": publisher.kafka_down_since is not None,
        **source.stats,
    }


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, frame: Any) -> None:
        # Only set the flag: logging from a signal handler can interleave with the interrupted write.
        stop.set()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stock-platform produce", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
