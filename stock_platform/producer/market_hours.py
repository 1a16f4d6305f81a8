"""NYSE regular session (09:30-16:00 New York time, Monday to Friday), DST-correct via zoneinfo.

Exchange holidays and early closes are not modelled: on those days the producer simply polls at its
normal pace and Finnhub returns the last quote.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = dt.time(9, 30)
SESSION_CLOSE = dt.time(16, 0)


def in_regular_session(when: dt.datetime) -> bool:
    """True if the aware datetime ``when`` falls inside a weekday's regular session."""
    if when.tzinfo is None:
        raise ValueError("in_regular_session needs an aware datetime")
    local = when.astimezone(NEW_YORK)
    return local.weekday() < 5 and SESSION_OPEN <= local.time() < SESSION_CLOSE


def seconds_until_session(when: dt.datetime) -> float:
    """0 inside a session, else the seconds until the next weekday's 09:30 New York time."""
    if in_regular_session(when):
        return 0.0
    local = when.astimezone(NEW_YORK)
    day = local.date()
    if local.time() >= SESSION_OPEN:
        day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    # Built in New York time, so the UTC offset of that day (EST or EDT) applies.
    opens = dt.datetime.combine(day, SESSION_OPEN, tzinfo=NEW_YORK)
    return (opens - when).total_seconds()
