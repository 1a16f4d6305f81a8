"""The one partitions definition: a partition is a UTC minute of Kafka message time.

Dagster advises at most ~100,000 partitions per asset and a year of minutes is 525,600, so the set is
bounded by a moving start: the first partition is ``retention_days`` before today (UTC midnight), which
also matches how long Kafka keeps the records a minute is re-read from. 60 days is 86,400 partitions.
The start moves once a day, not at every load, so a code location reloaded within a day keeps the same
definition.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

MINUTE_KEY_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_RETENTION_DAYS = 60


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


minute_partitions = build_minute_partitions(partitions_start(dt.datetime.now(dt.UTC).date()))


def minute_key(moment: dt.datetime) -> str:
    """The partition key of the minute that contains ``moment`` (an aware datetime)."""
    return moment.astimezone(dt.UTC).strftime(MINUTE_KEY_FORMAT)


def minute_window(partition_key: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a minute partition, as aware UTC datetimes; pure, no partition enumeration."""
    start = dt.datetime.strptime(partition_key, MINUTE_KEY_FORMAT).replace(tzinfo=dt.UTC)
    return start, start + dt.timedelta(minutes=1)
