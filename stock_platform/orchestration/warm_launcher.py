"""WarmRunLauncher: runs start in a process that already holds the code location.

Dagster's DefaultRunLauncher asks the code server to spawn a new Python per run, which imports dagster,
dagster-dbt, dbt and the assets before the first step: ~8-10 s of every per-minute run on this machine
(benchmarks/freshness.py), a third of the time from a minute's close to its gold. This launcher keeps
one warm run host (stock_platform/orchestration/run_host.py) beside the daemon and forks it per run: a
child starts with everything imported and the dbt project parsed, and executes the run exactly as
``dagster api execute_run`` does. Each run is still its own process (its memory is returned when it
ends, a crash takes down only that run), and it writes its events to the instance like any run worker.

The host is replaced when a project file it imported changes (checked at each launch; the next run then
pays the cold start once), when it died, and when a run names a different Python. ``stock-platform run``
writes this launcher into the local instance (runner.py); docker-compose keeps the DefaultRunLauncher,
whose runs execute in the code-location container.

The launcher is instantiated by every process that loads the instance (webserver, daemon, code server):
only the daemon starts a host, as it starts (``start_host_soon``, called by the PromptRunCoordinator),
so that the first run does not wait ~10-15 s for it; termination and health checks work from any of them
through the worker's pid, recorded on the run as a tag. ``stock-platform run`` starts the host even
earlier, before ``dagster dev`` (``start_run_host_ahead``); the daemon's launcher then attaches to it
over a Unix socket in DAGSTER_HOME instead of starting one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Array, Field
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

PID_TAG = "stock_platform/run_worker_pid"
START_TAG = "stock_platform/run_worker_started"
HOST_MODULE = "stock_platform.orchestration.run_host"
DEFAULT_PRELOAD = ["stock_platform.definitions"]
# A host loads the code location and parses dbt before its first answer (~10 s here, more when busy).
HOST_READY_TIMEOUT_S = 180.0
# A host started ahead of the daemon waits for its launcher on this socket in DAGSTER_HOME.
SOCKET_NAME = "run_host.sock"
MAX_SOCKET_PATH = 107  # bytes in a Unix socket's path on Linux (sun_path holds 108 with the NUL)


class RunHostFailed(RuntimeError):
    """The warm run host could not be started or stopped answering."""


class RunHost:
    """A conversation with one run host: requests are answered in order. Subclasses give the transport."""

    executable: str
    pid: int
    sources: dict[str, float]

    def _readline(self) -> str:
        raise NotImplementedError

    def _write(self, line: str) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _await_ready(self) -> None:
        ready = self._answer(HOST_READY_TIMEOUT_S)
        if not ready.get("ready"):
            self.stop()
            raise RunHostFailed(f"run host answered {ready!r} instead of ready")
        self.sources = ready.get("sources", {})
        self.ready = ready

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        answer: list[str] = []

        def read() -> None:
            with contextlib.suppress(OSError, ValueError):  # the transport closed under the reader
                answer.append(self._readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not answer or not answer[0]:
            self.stop()
            raise RunHostFailed(
                f"the run host (pid {self.pid}) gave no answer within {timeout_s:.0f} s "
                f"(alive: {self.alive()}); its errors are in its starter's output"
            )
        return json.loads(answer[0])

    def stale(self) -> bool:
        """A project file the host imported was changed or removed since it loaded."""
        for path, mtime in self.sources.items():
            try:
                if os.stat(path).st_mtime != mtime:
                    return True
            except OSError:
                return True
        return False

    def start(self, run_id: str, instance_ref: str) -> int:
        self._write(json.dumps({"run_id": run_id, "instance_ref": instance_ref}) + "\n")
        return int(self._answer(30.0)["pid"])


class SpawnedRunHost(RunHost):
    """A host this process starts, spoken to over its stdin and stdout."""

    def __init__(self, executable: str, preload: list[str], instance_ref: str) -> None:
        self.executable = executable
        config = json.dumps({"preload": preload, "instance_ref": instance_ref})
        self.process = subprocess.Popen(
            [executable, "-m", HOST_MODULE, config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self.process.pid
        self._await_ready()

    def _readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def _write(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line)
        self.process.stdin.flush()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Close its stdin: the host leaves its loop; runs it forked carry on."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class AttachedRunHost(RunHost):
    """A host started ahead by another process (``start_run_host_ahead``), spoken to over its socket.
    Raises OSError when there is no host to attach to."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(str(path))
        except OSError:
            self._socket.close()
            raise
        self._reader = self._socket.makefile("r", encoding="utf-8", newline="\n")
        self.pid = 0  # until its ready line names it
        self._await_ready()
        self.pid = int(self.ready["pid"])
        self.executable = str(self.ready.get("executable", ""))
        self._started = process_start(self.pid)

    def _readline(self) -> str:
        return self._reader.readline()

    def _write(self, line: str) -> None:
        self._socket.sendall(line.encode())

    def alive(self) -> bool:
        return self._socket.fileno() != -1 and self.pid > 0 and pid_alive(self.pid, self._started)

    def stop(self) -> None:
        """Close the connection: the host ends (it serves one); runs it forked carry on."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self._socket.close()


def run_host_socket(dagster_home: Path) -> Path:
    """Where a host started ahead for the instance at ``dagster_home`` waits for its launcher."""
    return dagster_home / SOCKET_NAME


def start_run_host_ahead(
    dagster_home: Path, env: Mapping[str, str], cwd: Path, log_path: Path
) -> subprocess.Popen | None:
    """Start the instance's warm run host now, before ``dagster dev``: it loads while the webserver, code
    server and daemon start, and the daemon's launcher attaches to it over its socket. Without it the
    daemon starts the host itself, and a catch-up's first run waited ~7 s for it to load.

    None when the instance's run launcher is not a WarmRunLauncher (or the socket's path is too long for
    a Unix socket): the launcher then does as it did. The caller keeps the process's stdin pipe open
    while the platform runs (its end, or the caller's, ends the host) and stops the process's group with
    the platform: the runs forked by the host are in it.
    """
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        launcher = instance.run_launcher
        if not isinstance(launcher, WarmRunLauncher):
            return None
        config = {"preload": launcher.preload, "instance_ref": serialize_value(instance.get_ref())}
    path = run_host_socket(dagster_home)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        return None
    path.unlink(missing_ok=True)  # left by a host whose starter was killed before any launcher came
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", HOST_MODULE, "--listen", str(path), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 on), or None when there is no
    such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot, /proc's field 22): with the pid it names one
    process, whereas a pid alone may be reused by an unrelated process after the worker ended."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def pid_alive(pid: int, started: str | None = None) -> bool:
    """True while the process exists, is not a zombie (a finished child not yet reaped) and, when
    ``started`` is given, is the one that started then."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return started is None or (len(fields) > 19 and fields[19] == started)


def worker_of(run: DagsterRun) -> tuple[int, str | None] | None:
    """The run worker's pid and start time from the run's tags; None when it has none."""
    pid = run.tags.get(PID_TAG)
    return None if pid is None else (int(pid), run.tags.get(START_TAG))


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Forks each run from a warm run host (module docstring)."""

    def __init__(self, preload: list[str] | None = None, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._preload = list(preload if preload is not None else DEFAULT_PRELOAD)
        self._host: RunHost | None = None
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None
        super().__init__()

    @property
    def preload(self) -> list[str]:
        return list(self._preload)

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "preload": Field(
                Array(str),
                is_required=False,
                default_value=DEFAULT_PRELOAD,
                description="Modules the run host imports before the first run (the code location).",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(preload=list(config_value.get("preload", DEFAULT_PRELOAD)), inst_data=inst_data)

    def _host_for(self, executable: str, instance_ref: str) -> RunHost:
        host = self._host
        if host is None:
            host = self._attach()
        if host is not None and (not host.alive() or host.executable != executable or host.stale()):
            host.stop()
            host = None
        if host is None:
            host = SpawnedRunHost(executable, self._preload, instance_ref)
        self._host = host
        return host

    def _attach(self) -> RunHost | None:
        """The host started ahead for this instance, if one waits on its socket (the first to attach
        takes it: the host then removes the socket)."""
        path = run_host_socket(Path(self._instance.root_directory))
        if not path.exists():
            return None
        try:
            return AttachedRunHost(path)
        except (OSError, RunHostFailed, ValueError) as exc:
            logging.getLogger(__name__).warning("the run host started ahead could not be used (%s)", exc)
            return None

    def start_host_soon(self) -> None:
        """Start the run host on a thread now rather than at the first launch, which then only waits for
        it to be ready. Once per launcher; a host that fails to start here is started again by the first
        launch, whose failure Dagster records on the run."""
        if self._warming is not None:
            return
        ref = serialize_value(self._instance.get_ref())

        def start() -> None:
            with self._lock:
                try:
                    self._host_for(sys.executable, ref)
                except (RunHostFailed, OSError, ValueError) as exc:
                    logging.getLogger(__name__).warning(
                        "the run host did not start ahead of the first run (%s); the first launch tries again",
                        exc,
                    )

        self._warming = threading.Thread(target=start, name="warm-run-host", daemon=True)
        self._warming.start()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        executable = (origin.executable_path if origin is not None else None) or sys.executable
        ref = serialize_value(self._instance.get_ref())
        with self._lock:
            try:
                pid = self._host_for(executable, ref).start(run.run_id, ref)
            except (RunHostFailed, OSError, ValueError):
                # One retry on a fresh host (it may have died between runs); a second failure is the
                # run's launch failure, which Dagster records on the run.
                if self._host is not None:
                    self._host.stop()
                self._host = None
                pid = self._host_for(executable, ref).start(run.run_id, ref)
        started = process_start(pid)  # None when the run already ended: health then says it is gone
        self._instance.add_run_tags(
            run.run_id, {PID_TAG: str(pid), **({START_TAG: started} if started is not None else {})}
        )

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = worker_of(run)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "the run has no run worker pid tag")
        pid, started = worker
        # Without its start time (a run that ended before it was read) the worker counts as gone.
        if started is not None and pid_alive(pid, started):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed, out of memory, or crashed)"
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        worker = worker_of(run)
        self._instance.report_run_canceling(run)
        # Only the process that started as the worker: never one that reused its pid.
        if worker is not None and worker[1] is not None and pid_alive(*worker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker[0], signal.SIGTERM)
        pid = None if worker is None else worker[0]
        self._instance.report_run_canceled(run, message=f"Run worker process {pid} terminated.")
        return True

    def dispose(self) -> None:
        with self._lock:  # after a host being started ahead of the first run is up, so it is stopped too
            if self._host is not None:
                self._host.stop()
                self._host = None
