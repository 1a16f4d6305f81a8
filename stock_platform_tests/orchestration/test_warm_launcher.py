"""WarmRunLauncher against a real instance: runs forked from one warm host, in their own processes.

The host is a real `python -m stock_platform.orchestration.run_host` process; runs are real Dagster runs
of the jobs in warm_jobs.py, whose events land in the instance as a run worker's would.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._daemon.controller import create_daemons_from_instance

from stock_platform.orchestration.prompt_coordinator import PromptRunCoordinator
from stock_platform.orchestration.warm_launcher import (
    PID_TAG,
    START_TAG,
    AttachedRunHost,
    SpawnedRunHost,
    WarmRunLauncher,
    pid_alive,
    process_start,
    run_host_socket,
    start_run_host_ahead,
)
from stock_platform_tests.orchestration import warm_jobs

pytestmark = pytest.mark.slow  # each test starts a run host (~10 s of imports)

PRELOAD = "stock_platform_tests.orchestration.warm_jobs"


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    imports = tmp_path / "imports.txt"
    monkeypatch.setenv("WARM_JOBS_IMPORTS", str(imports))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_launcher:\n"
        "  module: stock_platform.orchestration.warm_launcher\n"
        "  class: WarmRunLauncher\n"
        f"  config:\n    preload: [{PRELOAD}]\n"
        "run_coordinator:\n"
        "  module: stock_platform.orchestration.prompt_coordinator\n"
        "  class: PromptRunCoordinator\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst
        inst.run_launcher.dispose()


def launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> dg.DagsterRun:
    """Create a run of ``job`` whose origin is the module, as a workspace's python_module names it."""
    pointer = ModuleCodePointer(PRELOAD, "defs", working_directory=os.getcwd())
    origin = JobPythonOrigin(job.name, RepositoryPythonOrigin(sys.executable, pointer))
    run = instance.create_run_for_job(job_def=job, job_code_origin=origin)
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run


def finished(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 120) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish within {timeout_s} s")


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    messages = [e.user_message for e in instance.all_logs(run_id)]
    return int(next(m for m in messages if m.startswith("worker pid")).split()[-1])


def host_pid(instance: dg.DagsterInstance) -> int:
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmRunLauncher) and launcher._host is not None
    return launcher._host.pid


def test_runs_execute_in_their_own_children_of_one_warm_host(instance, tmp_path):
    first = launch(instance, warm_jobs.pid_job)
    host = host_pid(instance)
    second = launch(instance, warm_jobs.pid_job)
    assert host_pid(instance) == host, "the second run reuses the warm host"

    for run in (first, second):
        assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    pids = {worker_pid(instance, run.run_id) for run in (first, second)}
    tagged = {int(instance.get_run_by_id(run.run_id).tags[PID_TAG]) for run in (first, second)}
    assert pids == tagged and len(pids) == 2, "each run has its own process, named by the pid tag"
    assert host not in pids and os.getpid() not in pids
    # The code was imported by the host (and by this test process), never by a run's child.
    importers = {int(line) for line in (tmp_path / "imports.txt").read_text().split()}
    assert importers == {host}


def test_a_failing_run_is_recorded_as_failed_and_the_host_carries_on(instance):
    failed = finished(instance, launch(instance, warm_jobs.failing_job).run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    failures = [
        e.dagster_event.step_failure_data.error.to_string()
        for e in instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    ]
    assert len(failures) == 1 and "this op fails on purpose" in failures[0]
    assert (
        finished(instance, launch(instance, warm_jobs.pid_job).run_id).status == dg.DagsterRunStatus.SUCCESS
    )


def test_terminate_stops_the_worker_and_cancels_the_run(instance):
    run = launch(instance, warm_jobs.sleeping_job)
    deadline = time.monotonic() + 60
    while instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.1)
    pid = int(instance.get_run_by_id(run.run_id).tags[PID_TAG])
    assert instance.run_launcher.terminate(run.run_id) is True
    assert finished(instance, run.run_id, 30).status == dg.DagsterRunStatus.CANCELED
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} still alive after termination"
        time.sleep(0.1)
    assert instance.run_launcher.terminate(run.run_id) is False, "a finished run is not terminated again"


def test_health_check_reports_a_killed_worker_as_failed(instance):
    run = launch(instance, warm_jobs.sleeping_job)
    deadline = time.monotonic() + 60
    while PID_TAG not in instance.get_run_by_id(run.run_id).tags:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    launcher = instance.run_launcher
    running = instance.get_run_by_id(run.run_id)
    assert launcher.check_run_worker_health(running).status == WorkerStatus.RUNNING
    pid = int(running.tags[PID_TAG])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED and str(pid) in (health.msg or "")


def test_a_changed_source_file_replaces_the_host(instance, tmp_path):
    assert (
        finished(instance, launch(instance, warm_jobs.pid_job).run_id).status == dg.DagsterRunStatus.SUCCESS
    )
    old_host = host_pid(instance)
    source = Path(warm_jobs.__file__)
    stat = source.stat()
    try:
        os.utime(source, (stat.st_atime, stat.st_mtime + 5))
        run = launch(instance, warm_jobs.pid_job)
    finally:
        os.utime(source, (stat.st_atime, stat.st_mtime))
    assert host_pid(instance) != old_host
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert not pid_alive(old_host), "the stale host left when its stdin closed"


def test_a_dead_host_is_replaced_at_the_next_launch(instance):
    assert (
        finished(instance, launch(instance, warm_jobs.pid_job).run_id).status == dg.DagsterRunStatus.SUCCESS
    )
    old_host = host_pid(instance)
    os.kill(old_host, signal.SIGKILL)
    instance.run_launcher._host.process.wait(10)
    run = launch(instance, warm_jobs.pid_job)
    assert host_pid(instance) != old_host
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_a_reused_pid_is_not_taken_for_the_worker(instance):
    """A worker's pid may be given to an unrelated process after the run ended: health says the worker
    is gone, and terminate does not signal that process (here: this test's own process)."""
    ended = finished(instance, launch(instance, warm_jobs.pid_job).run_id)
    worker_started = ended.tags[START_TAG]
    me = os.getpid()
    assert pid_alive(me) and not pid_alive(me, worker_started)

    impostor = instance.create_run_for_job(
        job_def=warm_jobs.pid_job,
        status=dg.DagsterRunStatus.STARTED,
        tags={PID_TAG: str(me), START_TAG: worker_started},
    )
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(impostor).status == WorkerStatus.FAILED
    # SIGTERM to this process would end the test run here.
    assert launcher.terminate(impostor.run_id) is True
    assert instance.get_run_by_id(impostor.run_id).status == dg.DagsterRunStatus.CANCELED

    # With this process's real start time, the same pid is a live worker.
    alive = instance.create_run_for_job(
        job_def=warm_jobs.pid_job,
        status=dg.DagsterRunStatus.STARTED,
        tags={PID_TAG: str(me), START_TAG: process_start(me)},
    )
    assert launcher.check_run_worker_health(alive).status == WorkerStatus.RUNNING


def test_the_daemon_starts_the_host_before_the_first_run_and_other_processes_never_do(instance, tmp_path):
    launcher = instance.run_launcher
    assert isinstance(launcher, WarmRunLauncher)
    # Every process that loads the instance (webserver, code server) creates its launcher and coordinator.
    assert isinstance(instance.run_coordinator, PromptRunCoordinator)
    assert instance.get_concurrency_config() is not None
    assert launcher._warming is None and launcher._host is None, "no host outside the daemon"

    # What `dagster-daemon run` does first, before it loads the workspace or launches anything.
    create_daemons_from_instance(instance)
    deadline = time.monotonic() + 120
    while launcher._host is None:
        assert time.monotonic() < deadline, "the daemon's start did not start the run host"
        time.sleep(0.1)
    host = host_pid(instance)
    imports = tmp_path / "imports.txt"
    assert host in {int(line) for line in imports.read_text().split()}, "the host loaded the code"

    run = launch(instance, warm_jobs.pid_job)
    assert host_pid(instance) == host, "the first run is forked from the host started ahead of it"
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    create_daemons_from_instance(instance)  # a second daemon start on the same launcher: one host
    assert host_pid(instance) == host and launcher._host is not None and launcher._host.alive()


@pytest.fixture
def host_ahead(instance: dg.DagsterInstance, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A run host started ahead for the instance, as `stock-platform run` starts it before `dagster dev`."""
    host = start_run_host_ahead(Path(instance.root_directory), os.environ, Path.cwd(), tmp_path / "host.log")
    assert host is not None, "the instance's launcher is a WarmRunLauncher: a host must be started ahead"
    yield host
    if host.stdin is not None and not host.stdin.closed:
        host.stdin.close()
    try:
        host.wait(10)
    except subprocess.TimeoutExpired:
        host.kill()
        raise AssertionError("the host started ahead outlived its starter's pipe") from None


def ended(process: subprocess.Popen, timeout_s: float = 20) -> bool:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_daemon_attaches_to_the_host_started_ahead_and_its_runs_are_forked_there(
    instance, host_ahead, tmp_path
):
    socket_path = run_host_socket(Path(instance.root_directory))
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        assert time.monotonic() < deadline, "the host did not bind its socket before loading"
        time.sleep(0.05)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600, "only this user may ask the host for runs"

    launcher = instance.run_launcher
    create_daemons_from_instance(instance)
    deadline = time.monotonic() + 120
    while launcher._host is None:
        assert time.monotonic() < deadline, "the daemon's launcher did not take the host started ahead"
        time.sleep(0.1)
    assert isinstance(launcher._host, AttachedRunHost) and host_pid(instance) == host_ahead.pid
    assert not socket_path.exists(), "the socket is removed once a launcher holds the host"

    runs = [launch(instance, warm_jobs.pid_job) for _ in range(2)]
    for run in runs:
        assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    workers = {worker_pid(instance, run.run_id) for run in runs}
    assert len(workers) == 2 and host_ahead.pid not in workers
    importers = {int(line) for line in (tmp_path / "imports.txt").read_text().split()}
    assert importers == {host_ahead.pid}, "the code was loaded once, by the host started ahead"

    # A second process's launcher finds no host to take: it would start its own.
    with dg.DagsterInstance.from_config(instance.root_directory) as other:
        assert other.run_launcher._attach() is None

    launcher.dispose()  # the daemon's end closes the connection: the host ends, its runs carry on
    assert ended(host_ahead), "the host outlived the launcher that held it"


def test_a_host_started_ahead_ends_with_its_starters_pipe_before_or_after_it_is_taken(instance, host_ahead):
    launcher = instance.run_launcher
    create_daemons_from_instance(instance)
    deadline = time.monotonic() + 120
    while launcher._host is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    host_ahead.stdin.close()  # `stock-platform run` ended (or was killed)
    assert ended(host_ahead)
    # The launcher's next run goes to a host of its own.
    run = launch(instance, warm_jobs.pid_job)
    assert isinstance(launcher._host, SpawnedRunHost) and host_pid(instance) != host_ahead.pid
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_a_host_started_ahead_that_nobody_takes_leaves_no_socket(instance, tmp_path):
    host = start_run_host_ahead(Path(instance.root_directory), os.environ, Path.cwd(), tmp_path / "host.log")
    assert host is not None and host.stdin is not None
    socket_path = run_host_socket(Path(instance.root_directory))
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    host.stdin.close()
    assert ended(host, 120) and host.returncode == 0
    assert not socket_path.exists()


def test_a_socket_nobody_listens_on_is_passed_over(instance):
    """Left by a host killed before any launcher came: the launch goes to a host of the launcher's own."""
    import socket

    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(run_host_socket(Path(instance.root_directory))))
    left.close()  # the file stays; connecting to it is refused
    run = launch(instance, warm_jobs.pid_job)
    assert isinstance(instance.run_launcher._host, SpawnedRunHost)
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_a_host_started_ahead_of_a_project_change_is_replaced(instance, host_ahead):
    source = Path(warm_jobs.__file__)
    before = source.stat()
    deadline = time.monotonic() + 120
    # Loaded before the change: its ready line names the file's modification time then.
    while not (Path(instance.root_directory) / "run_host.sock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    launcher = instance.run_launcher
    taken = launcher._attach()
    assert isinstance(taken, AttachedRunHost) and taken.pid == host_ahead.pid
    launcher._host = taken
    try:
        os.utime(source, (before.st_atime, before.st_mtime + 5))
        run = launch(instance, warm_jobs.pid_job)
    finally:
        os.utime(source, (before.st_atime, before.st_mtime))
    assert isinstance(launcher._host, SpawnedRunHost), "a stale host is not given runs"
    assert ended(host_ahead), "the replaced host ended when its connection closed"
    assert finished(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
