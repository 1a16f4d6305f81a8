"""A warm run host: a process that has imported the code location once and forks one child per run.

Started by :class:`stock_platform.orchestration.warm_launcher.WarmRunLauncher` as
``python -m stock_platform.orchestration.run_host '<json config>'``. It imports the configured modules
(the code location: dagster, dagster-dbt, dbt, DuckDB, confluent-kafka, the assets), resolves their
Definitions and parses the dbt project, then waits on stdin. Each request line names a run; the host
forks, and the child executes the run exactly as ``dagster api execute_run`` does
(``_execute_run_command_body``), in a fresh process that already holds everything a run needs. A new
run worker otherwise spends ~8 s importing the code location before its first step (measured with
benchmarks/freshness.py).

Protocol (one JSON object per line): the host writes ``{"ready": ..., "sources": {path: mtime}}`` once
loaded (the project files it imported, so the launcher can tell when they changed), then answers each
``{"run_id": ..., "instance_ref": <serialized InstanceRef>}`` with ``{"pid": N}``. End of stdin (the
launcher's process is gone or replaced the host) ends the host; running children carry on.

The host keeps no threads, sockets or database connections when it forks: it only imports and parses.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import sys
import sysconfig
import threading
import traceback
from typing import Any

READY = "ready"


def project_sources() -> dict[str, float]:
    """The Python files imported from outside the interpreter's install (site-packages, stdlib): the
    code location's own modules, whose change makes this host stale."""
    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    sources: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or any(path.startswith(prefix) for prefix in installed):
            continue
        try:
            sources[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return sources


def preload(modules: list[str], instance_ref: str | None = None) -> list[str]:
    """Import the modules, resolve the Definitions they hold, parse the dbt project and open the instance
    once (its storage imports cost ~2.3 s on the first open); returns what could not be warmed (the child
    then does it itself, as a cold run worker would)."""
    import dagster as dg

    problems: list[str] = []
    if instance_ref is not None:
        try:
            from dagster._cli.api import _execute_run_command_body  # noqa: F401 (imported for the children)
            from dagster._core.instance import DagsterInstance, InstanceRef
            from dagster._serdes import deserialize_value

            # Closed again before any fork: the children open their own connections.
            with DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
                instance.get_runs(limit=1)
        except Exception as exc:
            problems.append(f"instance: {exc}")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the run's child reports the import error in the run's own log
            problems.append(f"import {name}: {exc}")
            continue
        for value in vars(module).values():
            if isinstance(value, dg.Definitions):
                repository = value.get_repository_def()
                for job in repository.get_all_jobs():
                    job.get_job_snapshot()
    try:
        from stock_platform.transform.dbt_runner import warm

        warm()
    except Exception as exc:
        problems.append(f"dbt parse: {exc}")
    return problems


def run_child(request: dict[str, Any]) -> None:
    """In the forked child: execute the run, then leave without returning to the host's loop."""
    code = 1
    try:
        # The host ignores SIGCHLD (so its children never linger as zombies); the run's own subprocesses
        # must be waitable, and the run must stop at once when terminated.
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # the protocol pipe is the host's; the run's output goes where the host's errors go
        sys.stdout = os.fdopen(1, "w", buffering=1)

        from dagster._cli.api import _execute_run_command_body
        from dagster._core.instance import DagsterInstance, InstanceRef
        from dagster._serdes import deserialize_value

        ref = deserialize_value(request["instance_ref"], InstanceRef)
        with DagsterInstance.from_ref(ref) as instance:
            code = _execute_run_command_body(
                request["run_id"],
                instance,
                write_stream_fn=lambda _event: None,
                set_exit_code_on_failure=True,
            )
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(config: dict[str, Any]) -> None:
    problems = preload(config.get("preload", []), config.get("instance_ref"))
    gc.collect()
    # Objects made so far are never collected in the children: their pages stay shared with the host.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    reply(
        {
            READY: True,
            "pid": os.getpid(),
            "threads": threading.active_count(),
            "problems": problems,
            "sources": project_sources(),
        }
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        reply({"pid": pid})


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
