"""PromptRunCoordinator on a real SQLite instance: a sensor's run that nothing else waits for is launched at
submission; every other run is queued, and the queue daemon's own decision is the reference."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.instance import InstanceType
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.storage.event_log import InMemoryEventLogStorage
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.runs import InMemoryRunStorage
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from hypothesis import event, given, settings
from hypothesis import strategies as st

from stock_platform.orchestration.jobs import INGEST_TAG, gold_views_automation
from stock_platform.orchestration.prompt_coordinator import SENSOR_TAG, PromptRunCoordinator
from stock_platform.orchestration.purge import purge_history_job
from stock_platform_tests.orchestration.recording_launcher import RecordingRunLauncher

LAUNCHER = {
    "module": "stock_platform_tests.orchestration.recording_launcher",
    "class": "RecordingRunLauncher",
}
STATUSES = list(dg.DagsterRunStatus)
TAG_KEYS = ["stock_platform/ingest", "dagster/backfill", "team"]


@contextmanager
def instance_with(coordinator: str, concurrency: dict[str, Any]) -> Iterator[dg.DagsterInstance]:
    """An in-memory instance (as DagsterInstance.ephemeral builds one) with the given run coordinator
    and queue limits and a launcher that only records launches: fast enough for a property test."""
    with tempfile.TemporaryDirectory() as folder:
        instance = dg.DagsterInstance(
            instance_type=InstanceType.EPHEMERAL,
            local_artifact_storage=LocalArtifactStorage(folder),
            run_storage=InMemoryRunStorage(),
            event_storage=InMemoryEventLogStorage(),
            compute_log_manager=NoOpComputeLogManager(),
            run_coordinator=PromptRunCoordinator() if coordinator == "prompt" else QueuedRunCoordinator(),
            run_launcher=RecordingRunLauncher(),
            settings={"concurrency": concurrency},
        )
        with instance:
            yield instance


# Submitted runs need an origin (a queued run names its code location).
ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("stock_platform"), "__repository__"),
    "minute_pipeline_job",
)


def add_run(instance: dg.DagsterInstance, tags: dict[str, str], status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.add_run(
        dg.DagsterRun(job_name="minute_pipeline_job", tags=tags, status=status, remote_job_origin=ORIGIN)
    )


def submit(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]


def dequeued(instance: dg.DagsterInstance) -> list[str]:
    """The ids of the queued runs Dagster's own queue daemon would launch now."""
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    return [r.run_id for r in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)]


# One ingestion-lane run at a time, as docker/dagster.yaml and the local instance configure the queue.
ONE_INGESTION_RUN = {
    "runs": {"max_concurrent_runs": 4, "tag_concurrency_limits": [{"key": INGEST_TAG, "limit": 1}]}
}


def queue_minute_runs(instance: dg.DagsterInstance, count: int) -> None:
    for _ in range(count):
        submit(instance, add_run(instance, {INGEST_TAG: "minute"}, dg.DagsterRunStatus.NOT_STARTED))


tag_limits = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(TAG_KEYS), "limit": st.integers(0, 2)},
        optional={"value": st.sampled_from(["minute", "tests", {"applyLimitPerUniqueValue": True}])},
    ),
    max_size=3,
    unique_by=lambda limit: (limit["key"], str(limit.get("value"))),
)
run_tags = st.dictionaries(st.sampled_from(TAG_KEYS), st.sampled_from(["minute", "tests", "x"]), max_size=3)


@given(
    max_runs=st.sampled_from([-1, 0, 1, 4]),
    limits=tag_limits,
    tags=run_tags,
    from_sensor=st.booleans(),
    others=st.lists(st.tuples(run_tags, st.sampled_from(STATUSES)), max_size=3),
)
@settings(max_examples=100, deadline=None)
def test_a_run_is_launched_at_submission_exactly_when_a_sensor_asked_and_the_queue_would_take_it_now(
    max_runs: int, limits: list[dict], tags: dict[str, str], from_sensor: bool, others: list
) -> None:
    tags = {**tags, **({SENSOR_TAG: "kafka_lag_sensor"} if from_sensor else {})}
    concurrency = {"runs": {"max_concurrent_runs": max_runs, "tag_concurrency_limits": limits}}

    with instance_with("prompt", concurrency) as instance:
        assert isinstance(instance.run_coordinator, PromptRunCoordinator)
        for other_tags, status in others:
            add_run(instance, other_tags, status)
        run = add_run(instance, tags, dg.DagsterRunStatus.NOT_STARTED)
        submitted = submit(instance, run)
        launched = instance.run_launcher.launched  # type: ignore[attr-defined]

    # The reference: Dagster's queue daemon, deciding on a queue that holds this run alone and nothing in
    # progress, would launch it at its next loop.
    with instance_with("queued", concurrency) as reference:
        queued = submit(reference, add_run(reference, tags, dg.DagsterRunStatus.NOT_STARTED))
        assert queued.status == dg.DagsterRunStatus.QUEUED
        queue_takes_it = bool(dequeued(reference))

    waiting_or_running = {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    }
    alone = not any(status in waiting_or_running for _, status in others)
    event("launched at submission" if launched else "queued")
    if from_sensor and alone and queue_takes_it:
        assert launched == [run.run_id]
        assert submitted.status == dg.DagsterRunStatus.STARTING
    else:
        assert launched == []
        assert submitted.status == dg.DagsterRunStatus.QUEUED


def test_runs_behind_a_launched_run_keep_the_queues_order() -> None:
    """Three sensor runs submitted one after another: the first starts at once, the others wait in the
    queue in their order, and the queue daemon (limit 1 on the ingest tag) releases none while the first
    is in progress."""
    concurrency = {
        "runs": {
            "max_concurrent_runs": 4,
            "tag_concurrency_limits": [{"key": "stock_platform/ingest", "limit": 1}],
        }
    }
    tags = {SENSOR_TAG: "kafka_lag_sensor", "stock_platform/ingest": "minute"}
    with instance_with("prompt", concurrency) as instance:
        runs = [submit(instance, add_run(instance, tags, dg.DagsterRunStatus.NOT_STARTED)) for _ in range(3)]
        assert [r.status for r in runs] == [
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.QUEUED,
        ]
        assert dequeued(instance) == []
        instance.report_run_failed(runs[0])
        assert dequeued(instance) == [runs[1].run_id]


def test_a_view_run_leaves_the_queue_before_the_minute_runs_queued_ahead_of_it() -> None:
    """Dagster's own queue daemon, with the tags the views' automation sensor gives its runs: the view run
    is next, not behind a day of catch-up runs (jobs.py)."""
    with instance_with("prompt", ONE_INGESTION_RUN) as instance:
        queue_minute_runs(instance, 3)
        view = submit(
            instance, add_run(instance, dict(gold_views_automation.run_tags), dg.DagsterRunStatus.NOT_STARTED)
        )
        assert view.status == dg.DagsterRunStatus.QUEUED
        assert dequeued(instance) == [view.run_id]


def test_the_purge_run_waits_for_the_minute_run_in_flight_then_goes_before_the_queued_ones() -> None:
    """Dagster's own queue daemon, with the purge job's own tags: never beside a minute run (a second run
    process at a catch-up's memory peak), and not behind a day of queued catch-up runs either."""
    with instance_with("prompt", ONE_INGESTION_RUN) as instance:
        in_flight = add_run(instance, {INGEST_TAG: "minute"}, dg.DagsterRunStatus.STARTED)
        queue_minute_runs(instance, 3)
        purge = submit(
            instance, add_run(instance, dict(purge_history_job.tags), dg.DagsterRunStatus.NOT_STARTED)
        )
        assert purge.status == dg.DagsterRunStatus.QUEUED
        assert dequeued(instance) == []
        instance.report_run_failed(in_flight)
        assert dequeued(instance) == [purge.run_id]
