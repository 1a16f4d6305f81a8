"""The lag sensor's plan: which minutes become runs, in what batches, and what the cursor remembers."""

from __future__ import annotations

import datetime as dt

from stock_platform.orchestration.planning import (
    LagCursor,
    MinuteRange,
    PreviousRun,
    last_closed_minute,
    plan_runs,
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
