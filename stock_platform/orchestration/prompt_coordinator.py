"""PromptRunCoordinator: Dagster's run queue, except that a sensor's run nothing else waits for starts at once.

With QueuedRunCoordinator every run waits for the queue daemon's next loop, which comes once a second at
best (``dequeue_interval_seconds`` is a whole number of seconds and the loop sleeps in 0.5 s steps): 0.4 to
0.75 s of every minute's close → gold here (benchmarks/freshness.py), a fifth of it. Most runs are the
lag sensor's minute runs, each submitted when no other run exists; the queue would launch such a run at
its next loop anyway, so this coordinator launches it in the submitting thread instead. Only runs a
sensor requested, which the daemon submits: a run launched from the UI would otherwise be launched by the
webserver's own run launcher (locally a second warm run host). Any other run, and a sensor's run behind
another run (in progress, queued, or still being submitted), is queued exactly as before, so the queue's
order and its limits (``concurrency.runs``) are unchanged.

The one window this leaves: a run queued by another process between this check and this run's launch
(a few milliseconds), dequeued by the queue daemon in that same window, would run beside this one. The
steps are written for that (each is safe to repeat, the warehouse load waits for its lock, offsets are
committed only forward and never past a gap), so it could cost a retry, never a record.
"""

from __future__ import annotations

from dagster import DagsterRunStatus, RunsFilter
from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES, DagsterRun
from dagster._utils.tags import TagConcurrencyLimitsCounter

SENSOR_TAG = "dagster/sensor_name"
# Runs that are, or may soon be, holding a slot: started ones, queued ones, and ones still being submitted.
OCCUPYING = [*ACTIVE_RUN_STATUSES, DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]


class PromptRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that launches a sensor's run at once when no other run occupies or awaits a
    slot (module docstring)."""

    @property
    def dequeue_interval_seconds(self) -> int:
        # Read once, by the daemon as it creates its run-queue loop (dagster/_daemon/controller.py's
        # create_daemon_of_type), before it loads the workspace: the one moment only the process that
        # launches runs passes through. A warm run launcher starts its run host then, beside the code
        # server's start, instead of at the first run's launch (10-15 s of that run on a busy machine).
        start_host_soon = getattr(self._instance.run_launcher, "start_host_soon", None)
        if start_host_soon is not None:
            start_host_soon()
        return super().dequeue_interval_seconds

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED and SENSOR_TAG in run.tags and self._starts_now(run):
            self._instance.launch_run(run.run_id, context.workspace)
            launched = self._instance.get_run_by_id(run.run_id)
            assert launched is not None
            return launched
        return super().submit_run(context)

    def _starts_now(self, run: DagsterRun) -> bool:
        others = self._instance.get_run_ids(filters=RunsFilter(statuses=OCCUPYING), limit=2)
        if any(run_id != run.run_id for run_id in others):
            return False
        queue = self._instance.get_concurrency_config().run_queue_config
        if queue is None:
            return True
        # The queue's own rule with nothing in progress: a paused queue (max 0) or a tag limit of 0 holds it.
        if queue.max_concurrent_runs == 0:
            return False
        return not TagConcurrencyLimitsCounter(list(queue.tag_concurrency_limits), []).is_blocked(run)
