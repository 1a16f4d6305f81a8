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

Started ahead (``--listen <socket>``, by ``stock-platform run`` before ``dagster dev``; see
``warm_launcher.start_run_host_ahead``), the host speaks the same protocol over the first connection to
a Unix socket instead, so that its ~9 s of loading overlaps the webserver's, code server's and daemon's
start-ups rather than following the daemon's. It binds the socket (mode 0600) before loading, serves
one connection (the daemon's launcher) and removes the socket when it accepts it; it ends when that
connection closes or its stdin (a pipe its starter holds) ends, whichever comes first.

The host keeps no threads or database connections when it forks: it only imports and parses.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterator
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


def run_child(request: dict[str, Any], inherited: tuple[int, ...] = ()) -> None:
    """In the forked child: execute the run, then leave without returning to the host's loop.
    ``inherited``: the host's socket descriptors, closed here so that the launcher sees the host's end
    (end of file on the connection) even while runs it forked go on."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
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


def serve(config: dict[str, Any], listen: str | None = None) -> None:
    if listen is None:
        reply(load(config))
        for line in sys.stdin:
            if line.strip():
                reply({"pid": fork_run(json.loads(line))})
        return
    # Bound before loading: a launcher that connects meanwhile waits in the backlog for the ready line.
    listener = bind(listen)
    # Stopped with the platform (SIGTERM to its group), even while loading: leave through the cleanup
    # below, which removes the socket. Forked runs take the default action back (run_child).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    try:
        ready = load(config)
        connection = accept(listener)
    finally:
        # Taken or not, no second launcher may find it: one that does not starts its own host.
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen)
    if connection is None:
        return
    send(connection, ready)
    for line in lines_until_either_ends(connection):
        send(connection, {"pid": fork_run(json.loads(line), (connection.fileno(),))})


def load(config: dict[str, Any]) -> dict[str, Any]:
    """Preload, then the ready message."""
    problems = preload(config.get("preload", []), config.get("instance_ref"))
    gc.collect()
    # Objects made so far are never collected in the children: their pages stay shared with the host.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    return {
        READY: True,
        "pid": os.getpid(),
        "executable": sys.executable,
        "threads": threading.active_count(),
        "problems": problems,
        "sources": project_sources(),
    }


def fork_run(request: dict[str, Any], inherited: tuple[int, ...] = ()) -> int:
    pid = os.fork()
    if pid == 0:
        run_child(request, inherited)
    return pid


def bind(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` that only this user can connect to."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(previous)
    listener.listen(1)
    return listener


def accept(listener: socket.socket) -> socket.socket | None:
    """The first connection, or None when stdin ends before one comes."""
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [])
        if listener in readable:
            connection, _ = listener.accept()
            return connection
        if starter_gone():
            return None


def lines_until_either_ends(connection: socket.socket) -> Iterator[str]:
    """Request lines from the connection, until it or stdin (the starter's pipe) reaches its end."""
    pending = b""
    while True:
        readable, _, _ = select.select([connection, sys.stdin], [], [])
        if sys.stdin in readable and starter_gone():
            return
        if connection in readable:
            data = connection.recv(65536)
            if not data:
                return
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                if line.strip():
                    yield line.decode()


def starter_gone() -> bool:
    """Called when stdin is readable: True at its end (the starter closed its pipe, or exited)."""
    return not os.read(sys.stdin.fileno(), 4096)


def send(connection: socket.socket, message: dict[str, Any]) -> None:
    connection.sendall((json.dumps(message) + "\n").encode())


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    listen = None
    if argv[:1] == ["--listen"]:
        listen, argv = argv[1], argv[2:]
    serve(json.loads(argv[0]) if argv else {}, listen)


if __name__ == "__main__":
    main(sys.argv[1:])
