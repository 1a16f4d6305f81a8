"""`stock-platform topic ensure`: the quote topic with the broker's append time, and its dead-letter topic.

Creates the quote topic (``message.timestamp.type=LogAppendTime``, 60-day retention) or switches an existing
one to append time, and creates the dead-letter topic; prints what it did to each. Safe to run again.

Exit status: 0 when both topics are right; 1 when Kafka refused a change; 2 when Kafka is unreachable or
an argument is wrong.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from stock_platform.kafka_topic import (
    APPEND_TIME,
    CREATED,
    RETENTION_MS,
    SWITCHED,
    TIMESTAMP_TYPE,
    UNCHANGED,
    ensure_quote_topic,
    ensure_topic,
)
from stock_platform.producer.publisher import KafkaUnreachable, check_reachable
from stock_platform.settings import Settings, documented_default, load_settings


@dataclass(frozen=True)
class TopicSettings:
    bootstrap_servers: str
    topic: str
    dlq_topic: str
    partitions: int


def topic_settings(
    settings: Settings,
    bootstrap_servers: str | None = None,
    topic: str | None = None,
    dlq_topic: str | None = None,
    partitions: int | None = None,
) -> TopicSettings:
    """Arguments first, then the settings (the environment or the defaults); ValueError names a bad one."""
    partitions = settings.kafka_topic_partitions if partitions is None else partitions
    if partitions < 1:
        raise ValueError(f"the partition count must be at least 1, got {partitions}")
    return TopicSettings(
        bootstrap_servers=bootstrap_servers or settings.kafka_bootstrap_servers,
        topic=topic or settings.kafka_topic,
        dlq_topic=dlq_topic or settings.kafka_dlq_topic,
        partitions=partitions,
    )


def env_help(name: str, text: str = "") -> str:
    """An option's help naming the variable it overrides and that variable's default."""
    return f"{text}(env {name.upper()}; default {documented_default(Settings, name)})"


def ensure_topics(
    admin: AdminClient, topic: str, dlq_topic: str, partitions: int, replication_factor: int = -1
) -> tuple[str, str]:
    """Create or fix the quote topic, create the dead-letter topic; what was done to each.

    The quote topic's outcome is CREATED, SWITCHED (it existed with the producer's timestamps) or
    UNCHANGED; the dead-letter topic's is CREATED or UNCHANGED. Raises KafkaException when Kafka refuses.
    """
    quote = ensure_quote_topic(admin, topic, partitions, replication_factor)
    # The dead letters are kept as long as the quotes, as docker-compose's kafka-init does.
    dlq_created = ensure_topic(admin, dlq_topic, 1, replication_factor, {"retention.ms": str(RETENTION_MS)})
    return quote, CREATED if dlq_created else UNCHANGED


def describe(topic: str, dlq_topic: str, partitions: int, outcome: tuple[str, str]) -> list[str]:
    """The lines that say what ``ensure_topics`` did."""
    quote, dlq = outcome
    setting = f"{TIMESTAMP_TYPE}={APPEND_TIME}"
    days = RETENTION_MS // (24 * 3600 * 1000)
    lines = [{
        CREATED: f"topic {topic}: created ({partitions} partition(s), {setting}, retention {days} days)",
        SWITCHED: f"topic {topic}: switched to {setting} (it kept the producers' timestamps; records "
                  "appended before the change keep theirs)",
        UNCHANGED: f"topic {topic}: already correct ({setting})",
    }[quote]]  # fmt: skip
    lines.append(f"dead-letter topic {dlq_topic}: {'created' if dlq == CREATED else 'already exists'}")
    return lines


def ensure_from_settings(
    config: TopicSettings, replication_factor: int = -1, connect_timeout: float = 10.0
) -> list[str]:
    """Reach Kafka, ensure both topics, say what was done; KafkaUnreachable or KafkaException otherwise."""
    admin = check_reachable(config.bootstrap_servers, connect_timeout)
    outcome = ensure_topics(admin, config.topic, config.dlq_topic, config.partitions, replication_factor)
    return describe(config.topic, config.dlq_topic, config.partitions, outcome)


def kafka_error(exc: KafkaException) -> str:
    """The broker's own words for a failed admin request."""
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="topic_command", required=True, metavar="{ensure}")
    help_text = (
        "create the quote topic with the broker's append time (or fix an existing one) and the DLQ topic"
    )
    ensure = sub.add_parser("ensure", help=help_text, description=help_text)
    ensure.add_argument("--topic", default=None, help=env_help("kafka_topic"))
    ensure.add_argument("--bootstrap-servers", default=None, help=env_help("kafka_bootstrap_servers"))
    ensure.add_argument(
        "--partitions",
        type=int,
        default=None,
        help=env_help("kafka_topic_partitions", "partitions when creating the quote topic "),
    )
    ensure.add_argument("--dlq-topic", default=None, help=env_help("kafka_dlq_topic"))
    ensure.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        help="replication factor when creating topics (default -1: the broker's default)",
    )
    ensure.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for Kafka (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = topic_settings(
            load_settings(), args.bootstrap_servers, args.topic, args.dlq_topic, args.partitions
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        lines = ensure_from_settings(config, args.replication_factor, args.connect_timeout)
    except KafkaUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        print(
            f"error: Kafka at {config.bootstrap_servers} refused to create or configure topic "
            f"{config.topic} or {config.dlq_topic}: {kafka_error(exc)}",
            file=sys.stderr,
        )
        return 1
    for line in lines:
        print(line, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stock-platform topic", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
