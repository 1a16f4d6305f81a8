"""The quote topic's one required setting: the broker stamps each record with its append time.

A minute partition is the UTC minute in which the broker appended a record (``LogAppendTime``). Append
time only grows along a Kafka partition, so consecutive minutes' offset ranges tile the log: every offset
belongs to exactly one minute and no producer's clock can move a record into another minute. On a topic
that keeps the producer's time (``CreateTime``, Kafka's default) one record from a fast clock would
hide the records after it, so ingestion refuses such a topic with ``TOPIC_FIX_COMMAND`` in its message.

Free of Dagster so the producer CLI imports it cheaply.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

log = logging.getLogger(__name__)

TIMESTAMP_TYPE = "message.timestamp.type"
APPEND_TIME = "LogAppendTime"
# Kafka keeps records 60 days, the partitions' moving start (stock_platform/partitions.py), so any kept
# minute can be re-read from Kafka.
RETENTION_MS = 60 * 24 * 3600 * 1000
QUOTE_TOPIC_CONFIG = {TIMESTAMP_TYPE: APPEND_TIME, "retention.ms": str(RETENTION_MS)}
TOPIC_FIX_COMMAND = "stock-platform topic ensure"
# With the producer's acks=all, a write is acknowledged once this many replicas have it (docs/kafka.md).
MIN_INSYNC_REPLICAS = "min.insync.replicas"


class TopicMisconfigured(RuntimeError):
    """The topic exists but does not stamp records with the broker's append time."""


def fix_hint(topic: str, bootstrap_servers: str) -> str:
    return (
        f"run `{TOPIC_FIX_COMMAND} --topic {topic} --bootstrap-servers {bootstrap_servers}` "
        f"(sets {TIMESTAMP_TYPE}={APPEND_TIME}; records appended before the change keep their old time)"
    )


def ensure_topic(
    admin: AdminClient,
    topic: str,
    partitions: int,
    replication_factor: int = -1,
    config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` if it is missing; True if this call created it. -1 = the broker's default RF."""
    if topic in admin.list_topics(timeout=10).topics:
        return False
    futures = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {}
            )
        ],
        operation_timeout=10,
    )
    try:
        futures[topic].result(timeout=15)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False  # another producer created it meanwhile
        raise
    log.info("created topic %s with %d partition(s)", topic, partitions)
    return True


CREATED, SWITCHED, UNCHANGED = "created", "switched", "unchanged"


def ensure_quote_topic(
    admin: AdminClient,
    topic: str,
    partitions: int,
    replication_factor: int = -1,
    min_insync_replicas: int | None = None,
) -> str:
    """Create the quote topic with append-time stamps, or switch an existing one to them.

    ``replication_factor`` -1 and ``min_insync_replicas`` None take the broker's defaults
    (``default.replication.factor``, ``min.insync.replicas``); on a cluster that should survive a broker,
    3 and 2 (docs/kafka.md). Both apply only when the topic is created.

    Returns CREATED, SWITCHED (it kept its producers' timestamps) or UNCHANGED.
    """
    config = dict(QUOTE_TOPIC_CONFIG)
    if min_insync_replicas is not None:
        config[MIN_INSYNC_REPLICAS] = str(min_insync_replicas)
    if ensure_topic(admin, topic, partitions, replication_factor, config):
        return CREATED
    if timestamp_type(admin, topic) == APPEND_TIME:
        return UNCHANGED
    set_append_time(admin, topic)
    return SWITCHED


def timestamp_type(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> str:
    """The topic's ``message.timestamp.type`` as the broker reports it.

    A topic another client created a moment ago may not be served yet (UNKNOWN_TOPIC_OR_PART): it is
    asked again until ``timeout_s`` has passed.
    """
    resource = ConfigResource(ResourceType.TOPIC, topic)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            future = admin.describe_configs([resource], request_timeout=timeout_s)[resource]
            try:
                configs = future.result(timeout=timeout_s)
            except TimeoutError:
                # A request that went to a broker which then died (a cluster losing a node) is never
                # answered; as a KafkaException it is reported (and retried) like any other Kafka error
                # instead of surfacing as a bare TimeoutError with no message.
                raise KafkaException(
                    KafkaError(
                        KafkaError._TIMED_OUT, f"no broker answered describe_configs within {timeout_s:g} s"
                    )
                ) from None
            break
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            unknown = isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    entry = configs.get(TIMESTAMP_TYPE)
    return entry.value if entry is not None else "CreateTime"


def set_append_time(admin: AdminClient, topic: str, timeout_s: float = 10.0) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(TIMESTAMP_TYPE, APPEND_TIME, incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource], request_timeout=timeout_s)[resource].result(timeout=timeout_s)


def require_append_time(admin: AdminClient, topic: str, bootstrap_servers: str) -> None:
    """Raise TopicMisconfigured, naming the fix, unless ``topic`` stamps records with append time."""
    found = timestamp_type(admin, topic)
    if found != APPEND_TIME:
        raise TopicMisconfigured(
            f"topic {topic!r} on {bootstrap_servers} has {TIMESTAMP_TYPE}={found}: a record's minute would "
            f"follow its producer's clock, so one fast clock could hide other records; "
            + fix_hint(topic, bootstrap_servers)
        )
