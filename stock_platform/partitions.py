"""The one partitions definition: a partition is a UTC minute of Kafka message time.

The set is a moving window: the first partition is UTC midnight ``window_days`` before today, and
``window_days`` is the successful runs' retention (HISTORY_SUCCESS_DAYS, default 3: 4,320 to 5,760 minutes
per asset). A minute whose run the history purge deleted has no status left for the UI to show, so a longer
window would only list such minutes as "missing"; and the UI pays per listed partition when it rebuilds
its partition-status cache (docs/operations.md). Older minutes stay replayable: the raw objects in the lake
(`stock-platform rebuild`), and Kafka's 60-day topic retention, whose records before the window are taken
in by the window's first minute (orchestration/planning.py).

The start moves once a day, not at every load, so a code location reloaded within a day keeps the same
definition. Everything here besides ``minute_partitions`` is plain arithmetic on keys and instants: nothing
asks the partitions definition for its keys, which is far too slow for a sensor tick.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping

import dagster as dg

from stock_platform.settings import Settings, load_settings

MINUTE_KEY_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_WINDOW_DAYS: int = Settings.model_fields["history_success_days"].default
MINUTE = dt.timedelta(minutes=1)
MINUTE_MS = 60_000


def partitions_start(today: dt.date, window_days: int = DEFAULT_WINDOW_DAYS) -> dt.datetime:
    """The first minute listed: UTC midnight ``window_days`` before ``today``."""
    first_day = today - dt.timedelta(days=window_days)
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

minute_partitions = build_minute_partitions(
    partitions_start(dt.datetime.now(dt.UTC).date(), load_settings().history_success_days)
)


# Dagster's run tags that name a run's partition, or the first and last of its range.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_minute_range(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """The first and last minute key of a run, from its tags (None for an unpartitioned run)."""
    first = tags.get(PARTITION_TAG) or tags.get(RANGE_START_TAG)
    last = tags.get(PARTITION_TAG) or tags.get(RANGE_END_TAG)
    return (first, last) if first and last else None


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
