from __future__ import annotations

import datetime as dt

import pytest

from stock_platform.producer.market_hours import in_regular_session, seconds_until_session

UTC = dt.UTC


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        # Winter (EST, UTC-5): 09:30 New York is 14:30 UTC.
        (dt.datetime(2026, 1, 14, 14, 29, tzinfo=UTC), False),
        (dt.datetime(2026, 1, 14, 14, 30, tzinfo=UTC), True),
        (dt.datetime(2026, 1, 14, 20, 59, tzinfo=UTC), True),
        (dt.datetime(2026, 1, 14, 21, 0, tzinfo=UTC), False),
        # Summer (EDT, UTC-4): 09:30 New York is 13:30 UTC.
        (dt.datetime(2026, 7, 15, 13, 30, tzinfo=UTC), True),
        (dt.datetime(2026, 7, 15, 20, 0, tzinfo=UTC), False),
        # The Monday after the March 2026 switch (8 March): already EDT.
        (dt.datetime(2026, 3, 9, 13, 30, tzinfo=UTC), True),
        # Weekend.
        (dt.datetime(2026, 7, 18, 15, 0, tzinfo=UTC), False),
    ],
)
def test_regular_session(when, open_):
    assert in_regular_session(when) is open_


def test_seconds_until_the_next_open_cross_the_weekend_and_the_dst_switch():
    friday_close = dt.datetime(2026, 3, 6, 21, 0, tzinfo=UTC)  # Fri 16:00 EST
    # Monday 9 March opens at 09:30 EDT = 13:30 UTC: 2 days 16.5 h later, one hour less than in winter.
    assert seconds_until_session(friday_close) == (2 * 24 + 16.5) * 3600
    assert seconds_until_session(dt.datetime(2026, 3, 9, 13, 45, tzinfo=UTC)) == 0.0
    assert seconds_until_session(dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)) == 1.5 * 3600


def test_a_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="aware"):
        in_regular_session(dt.datetime(2026, 1, 14, 15, 0))
