"""Which minutes the lag sensor runs next: pure arithmetic on keys, a few facts read from Kafka and the
Dagster instance, and a small JSON cursor.

The ingest group's committed offsets are the source of truth for what is done: they move only after a
minute is durable, and only contiguously (a run whose earlier minutes are not committed fails instead of
committing past them). So the plan starts at the minute of the first record not yet ingested, and the
cursor only remembers how far runs were already requested:

- while runs are queued or running, newly closed minutes are requested after them (the run queue lets
  one ingest run execute at a time, in order);
- when the last requested run failed, everything from the first pending minute is requested again under
  new run keys (``#retryN``), at most once per ``retry_after_s``;
- when it succeeded, planning continues after what was requested.

A record that reaches Kafka after its minute was ingested makes the next run fail to commit (it would be
skipped); the retry starts at the record's own minute, whose offset range now holds it, and re-runs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from stock_platform.partitions import MINUTE, MINUTE_MS, minute_key, minute_key_from_ms, minute_window


class PreviousRun(Enum):
    NONE = "none"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class MinuteRange:
    """Minutes ``first`` to ``last`` inclusive, run as one Dagster run (one partition when equal)."""

    first: str
    last: str
    attempt: int = 0

    @property
    def run_key(self) -> str:
        base = self.first if self.first == self.last else f"{self.first}...{self.last}"
        return base if self.attempt == 0 else f"{base}#retry{self.attempt}"

    @property
    def minutes(self) -> int:
        return minutes_between(self.first, self.last)


@dataclass
class LagCursor:
    """What the sensor carries between ticks (serialized as JSON)."""

    requested_through: str | None = None  # last minute key a run was requested for
    attempt: int = 0  # how many times the minutes after the committed position were re-requested
    retried_at_ms: int = 0
    tested_through: str | None = None  # last minute the dbt data tests were requested for
    reported_minute: str | None = None  # the minute of the last lag/freshness report on the assets
    reported_outcomes: list[bool] = field(default_factory=list)  # the checks' results in that report

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> LagCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Plan:
    ranges: tuple[MinuteRange, ...]
    cursor: LagCursor
    skip_reason: str | None


def minutes_between(first: str, last: str) -> int:
    """How many minutes from ``first`` to ``last`` inclusive."""
    return int((minute_window(last)[0] - minute_window(first)[0]) / MINUTE) + 1


def next_minute(key: str) -> str:
    return minute_key(minute_window(key)[1])


def last_closed_minute(now_ms: int, grace_ms: int, current_minute_has_records: bool) -> str:
    """The newest closed minute.

    A minute is closed once every Kafka partition holds a record past its end (Kafka appends in order per
    partition) or once its end plus the grace period has passed, which covers idle partitions.
    """
    if current_minute_has_records:
        return minute_key_from_ms(now_ms - MINUTE_MS)
    return minute_key_from_ms(now_ms - grace_ms - MINUTE_MS)


def split(
    first: str,
    last: str,
    *,
    single_run_limit: int,
    batch_minutes: int,
    max_runs: int,
    attempt: int,
    next_record_ms: Callable[[int], int | None] | None = None,
) -> list[MinuteRange]:
    """A run per minute for a few minutes; batches of ``batch_minutes`` for a catch-up.

    ``next_record_ms(t)`` gives the Kafka timestamp of the first record at or after ``t`` (None if there
    is none); with it, stretches without records (market closed, producer stopped) get no runs.
    """
    size = 1 if minutes_between(first, last) <= single_run_limit else batch_minutes
    ranges: list[MinuteRange] = []
    start = minute_window(first)[0]
    end = minute_window(last)[0]
    while start <= end and len(ranges) < max_runs:
        if next_record_ms is not None:
            found = next_record_ms(int(start.timestamp() * 1000))
            if found is None:
                break
            start = max(start, minute_window(minute_key_from_ms(found))[0])
            if start > end:
                break
        stop = min(start + (size - 1) * MINUTE, end)
        ranges.append(MinuteRange(minute_key(start), minute_key(stop), attempt))
        start = stop + MINUTE
    return ranges


def plan_runs(
    first_pending_ms: int | None,
    now_ms: int,
    cursor: LagCursor,
    previous: PreviousRun,
    *,
    grace_ms: int,
    current_minute_has_records: bool = False,
    single_run_limit: int = 3,
    batch_minutes: int = 60,
    max_runs_per_tick: int = 4,
    retry_after_s: float = 30.0,
    earliest_key: str | None = None,
    next_record_ms: Callable[[int], int | None] | None = None,
) -> Plan:
    """Plan the next runs from the oldest pending record's Kafka timestamp (None when there is no lag)."""
    if first_pending_ms is None:
        return Plan((), cursor, "no lag: the ingest group has committed every record")
    first = minute_key_from_ms(first_pending_ms)
    before_window = earliest_key is not None and first < earliest_key
    if before_window:
        # Records appended before the partitions window have no minute of their own: the window's first
        # minute takes them in (kafka_quote_batch reads it from the group's position), so it must run
        # even if none of its own records exist.
        first = earliest_key  # type: ignore[assignment]
    last = last_closed_minute(now_ms, grace_ms, current_minute_has_records)

    attempt, retried_at_ms = cursor.attempt, cursor.retried_at_ms
    requested = cursor.requested_through
    if previous is PreviousRun.FAILED:
        if now_ms - cursor.retried_at_ms < retry_after_s * 1000:
            return Plan(
                (), cursor, f"the run for minutes from {first} failed; retrying after {retry_after_s:g} s"
            )
        start, attempt, retried_at_ms = first, attempt + 1, now_ms
    elif requested is not None and requested >= first:
        start = next_minute(requested)
    else:
        start, attempt = first, 0

    if start > last:
        if previous is PreviousRun.IN_FLIGHT:
            return Plan((), cursor, f"runs are in flight through {requested}; no newer minute is closed")
        return Plan((), cursor, f"minute {start} has records but is not closed yet")

    ranges = []
    if before_window and start == first:
        ranges.append(MinuteRange(start, start, attempt))
        start = next_minute(start)
    if start <= last:
        ranges += split(
            start,
            last,
            single_run_limit=single_run_limit,
            batch_minutes=batch_minutes,
            max_runs=max_runs_per_tick - len(ranges),
            attempt=attempt,
            next_record_ms=next_record_ms,
        )
    if not ranges:
        return Plan((), cursor, f"no records in the closed minutes {start} to {last}")
    return Plan(tuple(ranges), replace(cursor, requested_through=ranges[-1].last, attempt=attempt,
                                       retried_at_ms=retried_at_ms), None)  # fmt: skip


def minute_index(key: str) -> int:
    """Minutes since the epoch of a minute key."""
    return int(minute_window(key)[0].timestamp()) // 60


def key_of_index(index: int) -> str:
    return minute_key_from_ms(index * MINUTE_MS)


def plan_tests(
    requested_through: str, tested_through: str | None, every_minutes: int, max_minutes: int
) -> tuple[MinuteRange | None, str]:
    """The minutes a dbt data-tests run covers once runs are requested through ``requested_through``
    (None when none is due), and the new ``tested_through``.

    The tests run every ``every_minutes`` minutes of Kafka time, when the requested minutes cross a
    multiple of it (aligned to the epoch, so :14, :29, :44 and :59 for 15), over the minutes requested
    since the last tests run, at most the last ``max_minutes`` of them. With no tests run before, counting
    starts at the block in progress. A retry that requests earlier minutes again does not re-test them.
    """
    last = minute_index(requested_through)
    block_end = (last + 1) // every_minutes * every_minutes - 1
    if tested_through is None:
        return None, key_of_index(block_end)
    tested = minute_index(tested_through)
    if block_end <= tested:
        return None, tested_through
    first = max(tested + 1, last - max_minutes + 1)
    return MinuteRange(key_of_index(first), requested_through), requested_through


def report_due(cursor: LagCursor, minute: str, outcomes: list[bool]) -> bool:
    """Whether a tick records its lag observation and check evaluations: once per minute, and at once when
    a check's result changed. Recording every tick (~12 a minute) was ~2/3 of the instance's growth."""
    return minute != cursor.reported_minute or outcomes != cursor.reported_outcomes
