"""The one partitions definition: a partition is a UTC minute of Kafka message time.

Dagster advises at most ~100,000 partitions per asset and a year of minutes is 525,600, so the set is
bounded by a moving start: the first partition is ``retention_days`` before today (UTC midnight), which
also matches how long Kafka keeps the records a minute is re-read from. 60 days is 86,400 partitions.
The start moves once a day, not at every load, so a code location reloaded within a day keeps the same
definition.

Everything here besides ``minute_partitions`` is plain arithmetic on keys and instants: nothing asks the
partitions definition for its keys, which for 86,400 minutes is far too slow for a sensor tick.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg

MINUTE_KEY_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_RETENTION_DAYS = 60
MINUTE = dt.timedelta(minutes=1)
MINUTE_MS = 60_000


def partitions_start(today: dt.date, retention_days: int = DEFAULT_RETENTION_DAYS) -> dt.datetime:
    """The first minute kept: UTC midnight ``retention_days`` before ``today``."""
    first_day = today - dt.timedelta(days=retention_days)
    return dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=dt.UTC)


def build_minute_partitions(start: dt.datetime) -> dg.TimeWindowPartitionsDefinition:
    return dg.TimeWindowPartitionsDefinition(
        start=start,
        fmt=MINUTE_KEY_FORMAT,
        cron_schedule="* * * * *",
        timezone="UTC",
    )


# A catch-up (after downtime) or a backfill runs up to an hour of minutes per run instead of one run per
# minute; every partitioned asset uses the same policy so a run covers the same minutes end to end.
CATCH_UP_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=60)

minute_partitions = build_minute_partitions(partitions_start(dt.datetime.now(dt.UTC).date()))


def minute_key(moment: dt.datetime) -> str:
    """The partition key of the minute that contains ``moment`` (an aware datetime)."""
    return moment.astimezone(dt.UTC).strftime(MINUTE_KEY_FORMAT)


def minute_key_from_ms(epoch_ms: int) -> str:
    """The partition key of the minute that contains an epoch-milliseconds instant (a Kafka timestamp)."""
    return minute_key(dt.datetime.fromtimestamp(epoch_ms // MINUTE_MS * 60, tz=dt.UTC))


def minute_window(partition_key: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a minute partition, as aware UTC datetimes; pure, no partition enumeration."""
    start = dt.datetime.strptime(partition_key, MINUTE_KEY_FORMAT).replace(tzinfo=dt.UTC)
    return start, start + MINUTE


def minute_window_ms(partition_key: str) -> tuple[int, int]:
    """[start, end) of a minute partition in epoch milliseconds, the unit of Kafka timestamps."""
    start, _ = minute_window(partition_key)
    start_ms = int(start.timestamp()) * 1000
    return start_ms, start_ms + MINUTE_MS


def minute_keys_between(first: dt.datetime, last: dt.datetime) -> Iterator[str]:
    """Keys of the minutes from the one containing ``first`` to the one containing ``last``, inclusive.

    Lazy, so a caller (the lag sensor) can stop after a batch without materializing a long range.
    """
    current = first.astimezone(dt.UTC).replace(second=0, microsecond=0)
    while current <= last:
        yield minute_key(current)
        current += MINUTE


def is_known_minute(
    partition_key: str, partitions: dg.TimeWindowPartitionsDefinition = minute_partitions
) -> bool:
    """Whether a key lies at or after the definition's start (runs for earlier minutes are invalid)."""
    start, _ = minute_window(partition_key)
    return start >= partitions.start
