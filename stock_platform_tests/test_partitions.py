"""The one partitions definition and the pure minute arithmetic around it."""

from __future__ import annotations

import datetime as dt

from stock_platform.partitions import (
    DEFAULT_WINDOW_DAYS,
    build_minute_partitions,
    is_known_minute,
    minute_key,
    minute_key_from_ms,
    minute_keys_between,
    minute_partitions,
    minute_window,
    minute_window_ms,
    partitions_start,
)


def test_minute_key_and_window_round_trip():
    moment = dt.datetime(2026, 11, 28, 8, 0, 59, 999_000, tzinfo=dt.UTC)
    assert minute_key(moment) == "2026-11-28-08:00"
    assert minute_window("2026-11-28-08:00") == (
        dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 28, 8, 1, tzinfo=dt.UTC),
    )
    assert minute_window("2026-12-31-23:59")[1] == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_minute_key_converts_other_time_zones_to_utc():
    new_york = dt.timezone(dt.timedelta(hours=-5))
    assert minute_key(dt.datetime(2026, 11, 28, 3, 30, 5, tzinfo=new_york)) == "2026-11-28-08:30"


def test_millisecond_helpers_match_kafka_timestamps():
    start_ms, end_ms = minute_window_ms("2026-11-28-08:00")
    assert (start_ms, end_ms) == (1795852800000, 1795852860000)
    assert minute_key_from_ms(start_ms) == "2026-11-28-08:00"
    assert minute_key_from_ms(end_ms - 1) == "2026-11-28-08:00"
    assert minute_key_from_ms(end_ms) == "2026-11-28-08:01"


def test_minute_keys_between_is_inclusive_and_lazy():
    first = dt.datetime(2026, 11, 28, 23, 58, 30, tzinfo=dt.UTC)
    last = dt.datetime(2026, 11, 29, 0, 0, 10, tzinfo=dt.UTC)
    assert list(minute_keys_between(first, last)) == [
        "2026-11-28-23:58",
        "2026-11-28-23:59",
        "2026-11-29-00:00",
    ]
    a_year = minute_keys_between(first, first + dt.timedelta(days=365))
    assert [next(a_year) for _ in range(2)] == ["2026-11-28-23:58", "2026-11-28-23:59"]


def test_partition_set_starts_at_the_retention_horizon_and_stays_small():
    assert partitions_start(dt.date(2026, 11, 28)) == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    assert partitions_start(dt.date(2026, 3, 1), 30) == dt.datetime(2026, 1, 30, tzinfo=dt.UTC)
    assert minute_partitions.start.date() == dt.datetime.now(dt.UTC).date() - dt.timedelta(
        days=DEFAULT_WINDOW_DAYS
    )
    # Counted by arithmetic: asking Dagster for every key of a large set is the slow path to avoid.
    minutes = (DEFAULT_WINDOW_DAYS + 1) * 24 * 60
    assert minutes == 5_760 < 100_000
    assert minute_partitions.cron_schedule == "* * * * *"
    assert minute_partitions.timezone == "UTC"


def test_a_small_definition_has_the_expected_keys():
    partitions = build_minute_partitions(dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC))
    keys = partitions.get_partition_keys(current_time=dt.datetime(2026, 11, 28, 8, 3, 30, tzinfo=dt.UTC))
    assert keys == ["2026-11-28-08:00", "2026-11-28-08:01", "2026-11-28-08:02"]
    assert is_known_minute("2026-11-28-08:00", partitions)
    assert not is_known_minute("2026-11-28-07:59", partitions)
