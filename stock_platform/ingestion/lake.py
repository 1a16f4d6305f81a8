"""The lake as the source of truth: which minutes it holds, and which of them the warehouse lacks.

The raw objects' keys are pure functions of (topic, minute) (object_keys.py), so listing a topic's
``raw/`` folder tells which minutes exist; the warehouse's ledger of loaded minutes tells which were
loaded, including minutes of 0 rows. Offsets are committed only when a minute and every earlier one are
loaded, so after a run's commit every lake minute before the run's first minute should be in the
ledger; one that is not was lost by the warehouse (a deleted file, a restored backup, a dropped table)
and is rebuilt from the lake by ``stock-platform rebuild`` (stock_platform/ingestion/rebuild.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from stock_platform.object_keys import RAW_PREFIX
from stock_platform.partitions import MINUTE, MINUTE_KEY_FORMAT, minute_window
from stock_platform.resources.object_store import ObjectStore
from stock_platform.resources.warehouse import Warehouse

# How far back each run of raw_quote_table compares the lake with the ledger: a day of minutes is two
# date folders to list (a few thousand keys), cheap enough for every run; older gaps are found with
# `stock-platform rebuild --check`, which compares the whole lake.
CHECK_LOOKBACK = dt.timedelta(hours=24)
# A minute of no records closes without holding back any offset commit, so a later minute's run may
# commit before that minute's own run has loaded it. Within this margin before the run, a missing minute
# whose raw object holds 0 rows is taken to be still on its way, not lost.
EMPTY_MINUTE_SETTLE = dt.timedelta(minutes=10)
# Past this many days, listing the topic's whole raw folder is cheaper than one listing per date.
_MAX_DATE_PREFIXES = 31

_RAW_NAME = re.compile(r"^date=\d{4}-\d{2}-\d{2}/hour=\d{2}/(\d{4}-\d{2}-\d{2})T(\d{2})(\d{2})Z\.ndjson\.gz$")


def topic_prefix(topic: str) -> str:
    """The folder of a topic's raw objects."""
    return f"{RAW_PREFIX}/{topic}/"


def date_prefixes(topic: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    """The ``date=`` folders holding the minutes [start, end) of a topic."""
    if end <= start:
        return []
    day, last = start.astimezone(dt.UTC).date(), (end - MINUTE).astimezone(dt.UTC).date()
    prefixes = []
    while day <= last:
        prefixes.append(f"{topic_prefix(topic)}date={day:%Y-%m-%d}/")
        day += dt.timedelta(days=1)
    return prefixes


def partition_key_of_object(topic: str, key: str) -> str | None:
    """The minute of a raw object key (inverse of raw_object_key), or None for any other key."""
    prefix = topic_prefix(topic)
    if not key.startswith(prefix):
        return None
    match = _RAW_NAME.match(key[len(prefix) :])
    if match is None:
        return None
    day, hour, minute = match.groups()
    return f"{day}-{hour}:{minute}"


def lake_minutes(
    store: ObjectStore, topic: str, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> dict[str, str]:
    """Partition key -> raw object key of every minute of ``topic`` in the lake within [start, end)."""
    if start is not None and end is not None and end - start <= dt.timedelta(days=_MAX_DATE_PREFIXES):
        prefixes = date_prefixes(topic, start, end)
    else:
        prefixes = [topic_prefix(topic)]
    minutes = {}
    for prefix in prefixes:
        for key in store.list_keys(prefix):
            partition_key = partition_key_of_object(topic, key)
            if partition_key is None:
                continue
            minute_start = minute_window(partition_key)[0]
            if (start is None or minute_start >= start) and (end is None or minute_start < end):
                minutes[partition_key] = key
    return dict(sorted(minutes.items()))


def missing_minutes(lake: Iterable[str], loaded: Iterable[str]) -> list[str]:
    """The lake's minutes absent from the ledger, in time order (minute keys sort as time)."""
    return sorted(set(lake) - set(loaded))


def rebuild_command(first: str, last: str) -> str:
    """The command that reloads the minutes [first, last] from the lake, then silver and gold."""
    return f"stock-platform rebuild --from {first} --to {last}"


@dataclass(frozen=True)
class LakeCoverage:
    """The lake compared with the warehouse's ledger over [start, end)."""

    topic: str
    start: dt.datetime | None
    end: dt.datetime | None
    lake_count: int
    missing: list[str]
    pending_empty: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        window = (
            f"from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
            if self.start is not None and self.end is not None
            else "in the whole lake"
        )
        if self.passed:
            return f"every one of the {self.lake_count} lake minute(s) of {self.topic!r} {window} is loaded"
        return (
            f"{len(self.missing)} of the {self.lake_count} lake minute(s) of {self.topic!r} {window} are "
            f"not in the warehouse ({self.missing[0]} to {self.missing[-1]}); rebuild them from the lake "
            f"with `{rebuild_command(self.missing[0], self.missing[-1])}`"
        )

    def metadata(self) -> dict[str, str | int]:
        return {
            "missing_minutes": len(self.missing),
            "first_missing": self.missing[0] if self.missing else "",
            "last_missing": self.missing[-1] if self.missing else "",
            "lake_minutes": self.lake_count,
            "checked_from": f"{self.start:%Y-%m-%dT%H:%M}Z" if self.start else "",
            "checked_to": f"{self.end:%Y-%m-%dT%H:%M}Z" if self.end else "",
            "pending_empty_minutes": len(self.pending_empty),
            "rebuild_command": rebuild_command(self.missing[0], self.missing[-1]) if self.missing else "",
        }


def settle_empty_minutes(
    missing: list[str], settle_from: dt.datetime, rows_of: Callable[[str], int | None]
) -> tuple[list[str], list[str]]:
    """Split ``missing`` into (missing, pending): a minute at or after ``settle_from`` whose raw object
    holds 0 rows (``rows_of``) is pending, as its own run may not have loaded it yet."""
    still, pending = [], []
    for key in missing:
        if minute_window(key)[0] >= settle_from and rows_of(key) == 0:
            pending.append(key)
        else:
            still.append(key)
    return still, pending


def coverage(
    store: ObjectStore,
    warehouse: Warehouse,
    topic: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    settle: dt.timedelta | None = None,
) -> LakeCoverage:
    """Compare the lake with the ledger over [start, end) (None: unbounded). With ``settle``, a 0-row
    minute missing within ``settle`` before ``end`` counts as pending rather than missing."""
    lake = lake_minutes(store, topic, start, end)
    loaded: Mapping[str, int] = warehouse.loaded_minutes(topic, start, end)
    missing = missing_minutes(lake, loaded)
    pending: list[str] = []
    if settle is not None and end is not None and missing:

        def rows_of(key: str) -> int | None:
            rows = store.metadata(lake[key]).get("rows")
            return int(rows) if rows is not None else None

        missing, pending = settle_empty_minutes(missing, end - settle, rows_of)
    return LakeCoverage(topic, start, end, len(lake), missing, pending)


def check_before(store: ObjectStore, warehouse: Warehouse, topic: str, first_key: str) -> LakeCoverage:
    """What raw_quote_table checks after each commit: the CHECK_LOOKBACK before the run's first minute."""
    end = minute_window(first_key)[0]
    return coverage(store, warehouse, topic, end - CHECK_LOOKBACK, end, settle=EMPTY_MINUTE_SETTLE)


def parse_minute_key(text: str) -> str:
    """A minute key as the CLI takes it (``%Y-%m-%d-%H:%M``), validated; raises ValueError."""
    try:
        dt.datetime.strptime(text, MINUTE_KEY_FORMAT)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a minute key like 2026-11-28-08:00 ({MINUTE_KEY_FORMAT})"
        ) from None
    return text
