"""The lag sensor's plan: which minutes become runs, in what batches, and what the cursor remembers."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.orchestration.planning import (
    LagCursor,
    MinuteRange,
    PreviousRun,
    key_of_index,
    last_closed_minute,
    minute_index,
    plan_runs,
    plan_tests,
    report_due,
)

GRACE_MS = 10_000


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_no_lag_plans_nothing():
    plan = plan_runs(None, ms("2026-11-28T08:00:30"), LagCursor(), PreviousRun.NONE, grace_ms=GRACE_MS)
    assert plan.ranges == ()
    assert plan.skip_reason == "no lag: the ingest group has committed every record"


def test_records_only_in_the_open_minute_plan_nothing():
    plan = plan_runs(
        ms("2026-11-28T08:00:05"), ms("2026-11-28T08:00:40"), LagCursor(), PreviousRun.NONE, grace_ms=GRACE_MS
    )
    assert plan.ranges == ()
    assert plan.skip_reason == "minute 2026-11-28-08:00 has records but is not closed yet"


def test_a_minute_closes_after_grace_or_when_every_partition_has_a_later_record():
    now = ms("2026-11-28T08:01:05")
    assert last_closed_minute(now, GRACE_MS, current_minute_has_records=False) == "2026-11-28-07:59"
    assert last_closed_minute(now, GRACE_MS, current_minute_has_records=True) == "2026-11-28-08:00"
    assert last_closed_minute(ms("2026-11-28T08:01:10"), GRACE_MS, False) == "2026-11-28-08:00"


def test_several_closed_minutes_get_one_run_each_oldest_first_with_unique_keys():
    plan = plan_runs(
        ms("2026-11-28T08:00:05"), ms("2026-11-28T08:03:20"), LagCursor(), PreviousRun.NONE, grace_ms=GRACE_MS
    )
    assert [r.run_key for r in plan.ranges] == ["2026-11-28-08:00", "2026-11-28-08:01", "2026-11-28-08:02"]
    assert plan.cursor.requested_through == "2026-11-28-08:02"


def test_far_behind_catches_up_in_batches_limited_per_tick():
    plan = plan_runs(
        ms("2026-11-27T08:00:00"), ms("2026-11-28T08:00:30"), LagCursor(), PreviousRun.NONE,
        grace_ms=GRACE_MS, batch_minutes=60, max_runs_per_tick=3,
    )  # fmt: skip
    assert plan.ranges == (
        MinuteRange("2026-11-27-08:00", "2026-11-27-08:59"),
        MinuteRange("2026-11-27-09:00", "2026-11-27-09:59"),
        MinuteRange("2026-11-27-10:00", "2026-11-27-10:59"),
    )
    assert plan.ranges[0].run_key == "2026-11-27-08:00...2026-11-27-08:59"
    assert plan.cursor.requested_through == "2026-11-27-10:59"


def test_while_runs_are_in_flight_only_newer_minutes_are_requested():
    cursor = LagCursor(requested_through="2026-11-28-08:01")
    now = ms("2026-11-28T08:03:15")
    plan = plan_runs(ms("2026-11-28T08:00:05"), now, cursor, PreviousRun.IN_FLIGHT, grace_ms=GRACE_MS)
    assert [r.run_key for r in plan.ranges] == ["2026-11-28-08:02"]

    idle = plan_runs(
        ms("2026-11-28T08:00:05"), ms("2026-11-28T08:02:30"), cursor, PreviousRun.IN_FLIGHT, grace_ms=GRACE_MS
    )
    assert idle.ranges == ()
    assert idle.skip_reason == "runs are in flight through 2026-11-28-08:01; no newer minute is closed"


def test_a_failed_run_is_retried_from_the_first_pending_minute_with_new_keys_after_a_pause():
    cursor = LagCursor(requested_through="2026-11-28-08:02")
    now = ms("2026-11-28T08:03:15")
    retry = plan_runs(
        ms("2026-11-28T08:01:05"), now, cursor, PreviousRun.FAILED, grace_ms=GRACE_MS, retry_after_s=30
    )
    assert [r.run_key for r in retry.ranges] == ["2026-11-28-08:01#retry1", "2026-11-28-08:02#retry1"]
    assert retry.cursor.attempt == 1 and retry.cursor.retried_at_ms == now

    again = plan_runs(
        ms("2026-11-28T08:01:05"),
        now + 10_000,
        retry.cursor,
        PreviousRun.FAILED,
        grace_ms=GRACE_MS,
        retry_after_s=30,
    )
    assert again.ranges == ()
    assert "retrying after 30 s" in again.skip_reason
    later = plan_runs(
        ms("2026-11-28T08:01:05"),
        now + 31_000,
        retry.cursor,
        PreviousRun.FAILED,
        grace_ms=GRACE_MS,
        retry_after_s=30,
    )
    assert [r.run_key for r in later.ranges] == ["2026-11-28-08:01#retry2", "2026-11-28-08:02#retry2"]


def test_after_success_a_late_record_does_not_rerun_its_ingested_minute():
    # The first pending record is stamped 08:00 but sits in 08:02's offset range: plan after 08:01.
    cursor = LagCursor(requested_through="2026-11-28-08:01")
    plan = plan_runs(
        ms("2026-11-28T08:00:59"), ms("2026-11-28T08:03:15"), cursor, PreviousRun.SUCCEEDED, grace_ms=GRACE_MS
    )
    assert [r.run_key for r in plan.ranges] == ["2026-11-28-08:02"]


def test_stretches_without_records_get_no_runs():
    # Records at 08:00 and then only from 14:30 on (market closed in between).
    def next_record_ms(after_ms: int) -> int | None:
        if after_ms <= ms("2026-11-28T08:00:00"):
            return ms("2026-11-28T08:00:10")
        if after_ms <= ms("2026-11-28T14:30:00"):
            return ms("2026-11-28T14:30:02")
        return None

    plan = plan_runs(
        ms("2026-11-28T08:00:10"), ms("2026-11-28T14:35:30"), LagCursor(), PreviousRun.NONE,
        grace_ms=GRACE_MS, batch_minutes=60, next_record_ms=next_record_ms,
    )  # fmt: skip
    assert plan.ranges == (
        MinuteRange("2026-11-28-08:00", "2026-11-28-08:59"),
        MinuteRange("2026-11-28-14:30", "2026-11-28-14:34"),
    )


def test_records_before_the_partitions_start_begin_at_its_first_minute():
    plan = plan_runs(
        ms("2026-01-01T00:00:00"), ms("2026-11-28T08:01:30"), LagCursor(), PreviousRun.NONE,
        grace_ms=GRACE_MS, earliest_key="2026-11-28-08:00",
    )  # fmt: skip
    assert [r.run_key for r in plan.ranges] == ["2026-11-28-08:00"]


def test_cursor_round_trips_through_json_and_ignores_unknown_fields():
    cursor = LagCursor(requested_through="2026-11-28-08:02", attempt=2, retried_at_ms=123)
    assert LagCursor.from_json(cursor.to_json()) == cursor
    assert LagCursor.from_json(None) == LagCursor()
    assert LagCursor.from_json('{"requested_through": "2026-11-28-08:00", "old_field": 1}') == LagCursor(
        "2026-11-28-08:00"
    )


def test_records_before_the_window_are_taken_in_by_its_first_minute_even_if_it_has_none_of_its_own():
    # The window starts at 08:00; the oldest pending record arrived at 07:30 and the next one at 08:05:
    # jumping to 08:05 would pass over the old records, so 08:00 runs first, then the rest from 08:05.
    plan = plan_runs(
        ms("2026-11-28T07:30:00"), ms("2026-11-28T08:06:30"), LagCursor(), PreviousRun.NONE,
        grace_ms=GRACE_MS, earliest_key="2026-11-28-08:00",
        next_record_ms=lambda at: max(at, ms("2026-11-28T08:05:10")),
    )  # fmt: skip
    assert [r.run_key for r in plan.ranges] == ["2026-11-28-08:00", "2026-11-28-08:05"]
    assert plan.cursor.requested_through == "2026-11-28-08:05"


def _key(index: int) -> str:
    return key_of_index(index)


@settings(max_examples=200, deadline=None)
@given(
    every=st.integers(1, 30),
    cap_extra=st.integers(0, 90),
    start=st.integers(27_000_000, 29_000_000),
    steps=st.lists(st.integers(-5, 150), min_size=1, max_size=40),
)
def test_tests_runs_follow_block_ends_and_cover_each_requested_minute_once(every, cap_extra, start, steps):
    """Against a direct count: a tests run is due exactly when the requested minutes passed the end of a
    block of ``every`` minutes since the last tests run (or since the first request); the runs' ranges
    are ordered, disjoint, end at the request, hold at most ``cap`` minutes, and with the minutes the cap
    dropped they cover every minute after the first block end exactly once."""
    cap = every + cap_extra
    requested, tested = start, None
    baseline = None
    covered: list[int] = []
    dropped = 0
    last_point = None  # the minute through which tests were planned (a block end at first)
    for step in steps:
        requested = max(start, requested + step)  # a negative step is a retry of earlier minutes
        minutes, tested = plan_tests(_key(requested), tested, every, cap)
        if baseline is None:
            baseline = last_point = (requested + 1) // every * every - 1
            assert minutes is None and tested == _key(baseline)
            continue
        crossed = any((m + 1) % every == 0 for m in range(last_point + 1, requested + 1))
        assert (minutes is not None) == crossed
        if minutes is None:
            continue
        first, last = minute_index(minutes.first), minute_index(minutes.last)
        assert last == requested and last - first + 1 <= cap and first > last_point
        dropped += first - (last_point + 1)
        covered += range(first, last + 1)
        last_point = requested
        assert tested == _key(requested)
    assert covered == sorted(set(covered))
    if covered:
        assert len(covered) + dropped == covered[-1] - baseline


def test_a_tests_window_is_the_minutes_since_the_last_one():
    first, tested = plan_tests("2026-12-02-10:07", None, 15, 60)
    assert (first, tested) == (None, "2026-12-02-09:59")
    assert plan_tests("2026-12-02-10:13", tested, 15, 60) == (None, tested)
    due, tested = plan_tests("2026-12-02-10:15", tested, 15, 60)
    assert due == MinuteRange("2026-12-02-10:00", "2026-12-02-10:15") and tested == "2026-12-02-10:15"
    # A retry requesting earlier minutes again tests nothing new.
    assert plan_tests("2026-12-02-10:14", tested, 15, 60) == (None, tested)


def test_the_report_is_once_a_minute_or_when_a_check_changes():
    cursor = LagCursor(reported_minute="2026-12-02-10:07", reported_outcomes=[True, True, True])
    assert not report_due(cursor, "2026-12-02-10:07", [True, True, True])
    assert report_due(cursor, "2026-12-02-10:07", [False, True, True])
    assert report_due(cursor, "2026-12-02-10:08", [True, True, True])
    assert report_due(LagCursor(), "2026-12-02-10:07", [True, True, True])
