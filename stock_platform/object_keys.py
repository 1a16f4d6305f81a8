"""Where a minute's files live: pure functions of (topic, minute), never of the clock or the run.

Deterministic keys are what make a re-run overwrite the minute's object instead of adding a second one.
Hive-style ``date=``/``hour=`` folders let a query engine (DuckDB, Snowflake external tables) prune by
time. The offset ranges are not in the key, because a minute closed by the grace period may gain late
records on a re-run and must still land on the same key; they travel in the object's metadata and in the
batch manifest instead.
"""

from __future__ import annotations

from stock_platform.partitions import minute_window

RAW_PREFIX = "raw"
DEAD_LETTER_PREFIX = "dead_letter"
BATCH_PREFIX = "batches"


def _minute_path(topic: str, partition_key: str) -> str:
    start, _ = minute_window(partition_key)
    return f"{topic}/date={start:%Y-%m-%d}/hour={start:%H}/{start:%Y-%m-%dT%H%M}Z"


def raw_object_key(topic: str, partition_key: str) -> str:
    """The minute's raw object: gzip NDJSON of envelopes."""
    return f"{RAW_PREFIX}/{_minute_path(topic, partition_key)}.ndjson.gz"


def dead_letter_object_key(topic: str, partition_key: str) -> str:
    """The minute's rejected records with their reasons: gzip NDJSON; absent when none were rejected."""
    return f"{DEAD_LETTER_PREFIX}/{_minute_path(topic, partition_key)}.ndjson.gz"


def batch_manifest_key(topic: str, partition_key: str) -> str:
    """The minute's Kafka batch: the offset range per Kafka partition, JSON."""
    return f"{BATCH_PREFIX}/{_minute_path(topic, partition_key)}.json"


def stage_path(topic: str, partition_key: str) -> str:
    """A Snowflake internal-stage folder unique to the minute, so two minutes' files never collide."""
    start, _ = minute_window(partition_key)
    return f"{topic}/{start:%Y/%m/%d/%H%M}"


def minute_iso(partition_key: str) -> str:
    """The minute as it appears in each envelope's ``minute`` field, e.g. ``2026-11-28T08:00:00Z``."""
    start, _ = minute_window(partition_key)
    return f"{start:%Y-%m-%dT%H:%M:%S}Z"
