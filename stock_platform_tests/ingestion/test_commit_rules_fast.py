"""The commit rules, as Dagster runs of the real ingestion assets over the in-memory Kafka topic.

The raw table is DuckDB and the lake a local folder under tmp_path; only the broker is replaced (see
stock_platform_tests/fake_kafka.py). The same rules against the real broker: test_ingest_minute.py.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
from hypothesis import given, settings
from hypothesis import strategies as st

from stock_platform.object_keys import raw_object_key
from stock_platform.partitions import minute_key
from stock_platform_tests.ingestion.in_memory_platform import Platform
from stock_platform_tests.ingestion.ingest_helpers import ASSETS

BASE = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=3)


def minute(i: int) -> str:
    return minute_key(BASE + dt.timedelta(minutes=i))


def failed_step(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def test_offsets_are_committed_only_once_the_raw_table_holds_the_minute(tmp_path):
    platform = Platform(tmp_path)
    platform.cluster.before_commit = platform.assert_commit_covered_by_the_table
    platform.append(minute(0), 0, 3)
    platform.append(minute(0), 1, 2)
    upstream = [a for a in ASSETS if a.key != dg.AssetKey("raw_quote_table")]

    assert platform.run(minute(0), assets=upstream).success
    assert platform.cluster.commits == []  # the object alone is not the end of the minute

    result = platform.run(minute(0))
    assert result.success
    assert platform.cluster.commits == [{0: 3, 1: 2}]
    assert platform.loaded() == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert platform.cluster.violations == []
    [table] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path == ["raw_quote_table"]
    ]
    assert table.materialization.metadata["committed_offsets"].value == {"0": 3, "1": 2}


def test_a_failed_load_commits_nothing_and_the_next_run_completes_the_minute(tmp_path):
    platform = Platform(tmp_path)
    platform.append(minute(0), 0, 4)

    failed = platform.run(minute(0), load_fails=True)
    assert not failed.success and failed_step(failed) == ["raw_quote_table"]
    assert platform.cluster.commits == [] and platform.loaded() == []
    assert (tmp_path / "lake" / raw_object_key("stock-quotes", minute(0))).exists()  # durable, not loaded

    assert platform.run(minute(0)).success
    assert platform.cluster.committed == {0: 4, 1: 0} and platform.loaded() == [(0, o) for o in range(4)]


def test_a_rerun_of_a_minute_commits_nothing_new_and_duplicates_nothing(tmp_path):
    platform = Platform(tmp_path)
    platform.append(minute(0), 0, 2)
    platform.append(minute(0), 1, 1)
    assert platform.run(minute(0)).success
    first = (platform.loaded(), list(platform.cluster.commits))

    again = platform.run(minute(0))
    assert again.success
    assert (platform.loaded(), platform.cluster.commits) == first
    [table] = [e for e in again.get_asset_materialization_events() if e.asset_key.path == ["raw_quote_table"]]
    assert table.materialization.metadata["committed_offsets"].value == {}


def test_rerunning_an_older_minute_never_moves_the_group_back(tmp_path):
    platform = Platform(tmp_path)
    platform.append(minute(0), 0, 2)
    platform.append(minute(1), 0, 3)
    assert platform.run(minute(0)).success
    assert platform.run(minute(1)).success
    assert platform.run(minute(0)).success

    assert platform.cluster.commits == [{0: 2, 1: 0}, {0: 5}]  # an empty partition's position too
    assert platform.loaded() == [(0, o) for o in range(5)]


def test_a_minute_after_an_unloaded_one_is_loaded_but_not_committed_past_it(tmp_path):
    platform = Platform(tmp_path)
    for i in range(3):
        platform.append(minute(i), 0, 2)
    assert platform.run(minute(0)).success
    assert not platform.run(minute(1), load_fails=True).success

    skipped = platform.run(minute(2))
    assert failed_step(skipped) == ["raw_quote_table"]
    failure = next(e for e in skipped.all_events if e.event_type_value == "STEP_FAILURE")
    assert "loaded but their offsets were not committed" in failure.event_specific_data.error.message
    assert "partition 0 offsets 2-4" in failure.event_specific_data.error.message
    assert platform.cluster.committed == {0: 2, 1: 0}

    assert platform.run(minute(1), minute(2)).success  # what the sensor's retry requests
    assert platform.cluster.commits == [{0: 2, 1: 0}, {0: 6}]
    assert platform.loaded() == [(0, o) for o in range(6)]


def test_a_fresh_group_is_not_committed_past_records_before_its_first_minute(tmp_path):
    """A group that never committed stands at the low watermark: running a later minute first (from the
    UI, say) loads it but must not mark the earlier, unloaded records as ingested."""
    platform = Platform(tmp_path)
    for i in range(2):
        platform.append(minute(i), 0, 3)

    later_first = platform.run(minute(1))
    assert failed_step(later_first) == ["raw_quote_table"]
    assert platform.cluster.committed == {}

    assert platform.run(minute(0), minute(1)).success
    assert platform.cluster.committed == {0: 6, 1: 0}
    assert platform.loaded() == [(0, o) for o in range(6)]


# One step of a schedule: append records now, let the clock pass into the next minute, or run a closed
# minute (its load failing or not).
STEP = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("next_minute")),
    st.tuples(st.just("run"), st.integers(0, 3), st.booleans()),
)


@settings(max_examples=6)  # each example is a few Dagster runs; the fast tier stays under a minute
@given(steps=st.lists(STEP, max_size=10).filter(lambda s: sum(step[0] == "run" for step in s) <= 3))
def test_any_schedule_of_appends_runs_and_failures_loads_each_record_once(tmp_path_factory, steps):
    """Whatever happens in between, commits only move forward over loaded rows, and a final run of the
    minutes from the first ends with every record in the raw table exactly once and all of it committed."""
    platform = Platform(tmp_path_factory.mktemp("schedule"))
    platform.cluster.before_commit = platform.assert_commit_covered_by_the_table
    now = 0
    for step in steps:
        if step[0] == "append":
            platform.append(minute(now), step[1], step[2])
        elif step[0] == "next_minute":
            now += 1
        elif step[1] < now:  # only closed minutes run, as the sensor and the asset itself insist
            platform.run(minute(step[1]), load_fails=step[2])
            assert set(platform.loaded()) <= {
                (p, o) for p, n in platform.cluster.high().items() for o in range(n)
            }

    assert platform.run(minute(0), minute(now)).success
    assert platform.cluster.violations == []
    high = platform.cluster.high()
    assert platform.loaded() == [(p, o) for p in sorted(high) for o in range(high[p])]
    assert platform.cluster.committed == high
